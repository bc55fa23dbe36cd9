"""Applying a list unsubscribe, whichever way it arrived.

Three doors lead here: the RFC 8058 one-click POST and the unsubscribe page
(both in the API) and a mailto unsubscribe found in the account's INBOX
(imap-sync).  All of them carry the same signed data (``tracking.tokens``:
``{act: "unsub", acc, list, rcpt, msg}``), so all of them act the same way:
the recipient is blocked for that list only (``blocklist``), never in the
transactional suppression list, and ``listUnsubscribe`` is announced once,
by whichever request added the entry, in the same transaction.

A repeat (a provider retrying, a second click) finds the entry and announces
nothing.  With the ``trackingPrivacy`` setting on, neither the entry nor the
webhook keeps the requester's IP address or user agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import blocklist, events, service_settings
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.event_relay import EventRelay, stage
from mailgate_common.tracking.tokens import Signer

REASON = "unsubscribe"
# Where an entry came from (the ``source`` of EmailEngine's blocklist entries).
ONE_CLICK = "one-click"
FORM = "form"
MAILTO = "mailto"

_ADDRESS_MAX = 320
_MESSAGE_ID_MAX = 998
_USER_AGENT_MAX = 512


@dataclass(frozen=True)
class Request:
    """Who leaves which list, from the signed data of the link they used."""

    account: str
    list_id: str
    recipient: str
    message_id: str | None = None


@dataclass(frozen=True)
class Requester:
    """Where the request came from (nothing for a mailto, nothing under trackingPrivacy)."""

    remote_address: str | None = None
    user_agent: str | None = None


def from_data(data: dict[str, Any] | None) -> Request | None:
    """The request in verified signed data, or None when it is not a usable unsubscribe."""
    if not data or data.get("act") != "unsub":
        return None
    account, list_id, recipient, message_id = (data.get(k) for k in ("acc", "list", "rcpt", "msg"))
    if not (isinstance(account, str) and account and isinstance(list_id, str) and blocklist.is_list_id(list_id)):
        return None
    if not (isinstance(recipient, str) and "@" in recipient and len(recipient) <= _ADDRESS_MAX):
        return None
    if not (isinstance(message_id, str) and len(message_id) <= _MESSAGE_ID_MAX):
        message_id = None
    return Request(account, list_id, recipient.strip(), message_id)


def read(signer: Signer, payload: str | None, sig: str | None) -> Request | None:
    """The request a link (``data``, ``sig``) carries; None when forged, truncated or not an unsubscribe."""
    if not payload or not sig:
        return None
    return from_data(signer.verify(payload, sig))


async def account_exists(session: AsyncSession, account: str) -> bool:
    return await session.scalar(select(Account.id).where(Account.id == account)) is not None


async def _requester(session: AsyncSession, requester: Requester) -> Requester:
    settings = await service_settings.read(session, ["trackingPrivacy"])
    if settings["trackingPrivacy"]:
        return Requester()
    agent = requester.user_agent[:_USER_AGENT_MAX] if requester.user_agent else None
    return Requester(requester.remote_address, agent)


async def unsubscribe(session: AsyncSession, request: Request, source: str,
                      requester: Requester = Requester()) -> events.ListUnsubscribe | None:
    """Block the recipient on the list and stage ``listUnsubscribe``; None (nothing staged) if already blocked."""
    who = await _requester(session, requester)
    added = await blocklist.add(
        session, request.list_id, request.recipient, account=request.account, reason=REASON, source=source,
        message_id=request.message_id, remote_address=who.remote_address, user_agent=who.user_agent,
    )
    if not added:
        return None
    event = events.ListUnsubscribe(
        account=request.account, recipient=request.recipient, list_id=request.list_id,
        message_id=request.message_id, remote_address=who.remote_address, user_agent=who.user_agent,
    )
    stage(session, event)
    return event


async def resubscribe(session: AsyncSession, request: Request,
                      requester: Requester = Requester()) -> events.ListSubscribe | None:
    """Unblock the recipient and stage ``listSubscribe``; None (nothing staged) if it was not blocked."""
    if not await blocklist.remove(session, request.list_id, request.recipient):
        return None
    who = await _requester(session, requester)
    event = events.ListSubscribe(
        account=request.account, recipient=request.recipient, list_id=request.list_id,
        message_id=request.message_id, remote_address=who.remote_address, user_agent=who.user_agent,
    )
    stage(session, event)
    return event


async def apply(db: Database, relay: EventRelay, request: Request, source: str,
                requester: Requester = Requester()) -> bool | None:
    """Unsubscribe in one transaction, then publish: True if added, False if it already was,
    None if the account does not exist (nothing stored: its links are dead)."""
    async with db.transaction() as session:
        if not await account_exists(session, request.account):
            return None
        event = await unsubscribe(session, request, source, requester)
    if event is not None:
        await relay.publish_committed([event])
    return event is not None
