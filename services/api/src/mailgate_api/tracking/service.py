"""Recording one served open or click: its row, its verdict and its event.

One transaction per counted fetch: a per-message advisory lock (so two opens
at once cannot both be the first), one read (the message's sent time, the
``trackingPrivacy`` setting and the database clock), the ``tracking_events``
row, and the event staged in ``pending_events``; published after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote

from litestar import Request
from sqlalchemy import text

from mailgate_api.deps import Resources
from mailgate_common import events
from mailgate_common.event_relay import stage
from mailgate_common.settings import Settings
from mailgate_common.tracking import machine
from mailgate_common.tracking.tokens import signer_for

log = logging.getLogger(__name__)

Kind = Literal["open", "click"]

# A transparent 1x1 GIF (42 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache",
            "Expires": "0"}

# The sent time is the last successful attempt's; a message still "sending" has just
# gone out (the receiving side can fetch before the sender has recorded its attempt).
_FACTS = text("""
SELECT now(),
       coalesce((SELECT max(finished_at) FROM delivery_attempts WHERE queue_id = :queue_id AND outcome = 'sent'),
                (SELECT now() FROM outbox WHERE id = :queue_id AND state = 'sending')),
       (SELECT value FROM settings WHERE key = 'trackingPrivacy')
""")

# ``first``: no open of this message counted before (the advisory lock orders racing opens).
_INSERT = text("""
INSERT INTO tracking_events (kind, account_id, queue_id, message_id, recipient, url, machine,
                             machine_reason, first, remote_address, user_agent)
SELECT :kind, :account, :queue_id, :message_id, :recipient, :url, :machine, :reason,
       :kind = 'open' AND NOT EXISTS (
           SELECT 1 FROM tracking_events
           WHERE kind = 'open' AND (queue_id = :queue_id OR (:queue_id IS NULL AND message_id = :message_id))),
       :remote_address, :user_agent
RETURNING first
""")


@dataclass(frozen=True, slots=True)
class Fetch:
    """Who fetched: the client's address (see :func:`client`) and user agent."""

    address: str | None
    user_agent: str | None


signer = signer_for


@lru_cache(maxsize=4)
def _trusted(spec: str | None) -> tuple[machine.Network, ...]:
    try:
        return machine.trusted_networks(spec)
    except ValueError as exc:
        # Fail closed: an unreadable list trusts no proxy (X-Forwarded-For ignored).
        log.error("MAILGATE_TRUSTED_PROXIES is not a list of addresses or CIDRs (%s): ignored", exc)
        return ()


def client(request: Request[Any, Any, Any], settings: Settings) -> Fetch:
    """The socket peer, or the X-Forwarded-For client when the peer is a trusted proxy."""
    peer = request.client.host if request.client else None
    address = machine.client_address(peer, request.headers.get("x-forwarded-for"), _trusted(settings.trusted_proxies))
    return Fetch(address, request.headers.get("user-agent"))


def verified(settings: Settings, data: str | None, sig: str | None, act: str) -> dict[str, Any] | None:
    """The signed data when the link is genuine and made for ``act``, else None."""
    if not data or not sig:
        return None
    values = signer(settings).verify(data, sig)
    if values is None or values.get("act") != act:
        return None
    return values


def destination(values: dict[str, Any]) -> str | None:
    """A click's target as a Location header value, or None when it is not an http(s) URL."""
    url = values.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return None
    # Non-ASCII (an IRI) and control characters are escaped: a header carries neither.
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _text(values: dict[str, Any], key: str) -> str | None:
    value = values.get(key)
    return value if isinstance(value, str) and value else None


async def record(res: Resources, kind: Kind, values: dict[str, Any], fetch: Fetch) -> events.Event:
    """Counts one open or click; returns the event published for it."""
    queue_id, message_id = _text(values, "q"), _text(values, "msg")
    params: dict[str, Any] = {"queue_id": queue_id, "message_id": message_id}
    async with res.db.transaction() as session:
        lock_key = f"tracking:{queue_id or message_id or ''}"
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": lock_key})
        now, sent_at, privacy = (await session.execute(_FACTS, params)).one()
        verdict = machine.classify(kind, address=fetch.address, user_agent=fetch.user_agent, sent_at=sent_at,
                                   now=now, prefetch_seconds=res.settings.tracking_prefetch_seconds)
        private = privacy is True
        address = None if private else fetch.address
        agent = None if private else (fetch.user_agent or None)
        url = _text(values, "url") if kind == "click" else None
        common: dict[str, Any] = dict(account=_text(values, "acc"), message_id=message_id, queue_id=queue_id,
                                      recipient=_text(values, "rcpt"), remote_address=address, user_agent=agent,
                                      machine=verdict.machine, machine_reason=verdict.reason)
        first = await session.scalar(_INSERT, {
            **params, "kind": kind, "account": common["account"], "recipient": common["recipient"], "url": url,
            "machine": verdict.machine, "reason": verdict.reason, "remote_address": address, "user_agent": agent,
        })
        event: events.Event = (events.TrackOpen(**common, first_open=bool(first)) if kind == "open"
                               else events.TrackClick(**common, url=url or ""))
        stage(session, event)
    await res.relay.publish_committed([event])
    return event
