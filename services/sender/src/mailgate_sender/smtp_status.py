"""What the sender tells about SMTP servers beyond each message: the account's
``smtpStatus`` and a gateway's use.

An account whose server refuses our login (535, EAUTH) or does not offer AUTH
although ``smtp.forceAuth`` is set is misconfigured: every message would fail
the same way.  Like EmailEngine, each such message fails at once (EAUTH is not
retried) and the account's ``smtpStatus`` (``Account.extra``, EmailEngine's
fields) says why; unlike EmailEngine, the change is also announced once, as
an ``authenticationError`` webhook, so an operator learns it without reading
every ``messageFailed``.  The status is only written when it changes (error
after ok, ok after error), so a healthy account costs no write per message.

A gateway counts its deliveries and keeps its last error, as EmailEngine's does.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay, stage
from mailgate_sender.outcome import Outcome

log = logging.getLogger(__name__)

EXTRA_SMTP_STATUS = "smtpStatus"

_SET_STATUS = text(
    """
    UPDATE accounts SET extra = jsonb_set(extra, '{smtpStatus}', :status), updated_at = now()
    WHERE id = :account AND (extra -> 'smtpStatus' ->> 'status') IS DISTINCT FROM :state
    RETURNING id
    """
).bindparams(bindparam("status", type_=JSONB))

_GATEWAY_SENT = text(
    "UPDATE gateways SET deliveries = deliveries + 1, last_use = now(), last_error = NULL WHERE id = :id"
)
_GATEWAY_FAILED = text(
    "UPDATE gateways SET last_use = now(), last_error = :error WHERE id = :id"
).bindparams(bindparam("error", type_=JSONB))


def is_auth_failure(outcome: Outcome) -> bool:
    """The server refused our login for good (not a 454 "try later")."""
    return outcome.error_code == "EAUTH" and outcome.kind == "permanent"


def status(outcome: Outcome) -> dict[str, Any]:
    """EmailEngine's ``smtpStatus`` for an outcome."""
    if outcome.kind == "sent":
        return {"created": events.iso(events.utcnow()), "status": "ok", "response": outcome.response}
    found: dict[str, Any] = {
        "created": events.iso(events.utcnow()),
        "status": "error",
        "response": outcome.response,
        "description": "Authentication failed" if outcome.error_code == "EAUTH" else outcome.error,
        "code": outcome.error_code,
    }
    if outcome.code is not None:
        found["responseCode"] = outcome.code
    if outcome.command:
        found["command"] = outcome.command
    return found


async def record_account(db: Database, relay: EventRelay, account: str, outcome: Outcome) -> bool:
    """Store the account's new ``smtpStatus`` if it changed; an error is announced
    once (``authenticationError``).  True if it changed."""
    new = status(outcome)
    change: events.AccountState | None = None
    async with db.transaction() as session:
        changed = await session.scalar(_SET_STATUS, {"status": new, "account": account, "state": new["status"]})
        if changed is None:
            return False
        if new["status"] == "error":
            change = events.AccountState(account=account, state="authenticationError",
                                         error=f"SMTP: {new['description']}", response=outcome.response)
            stage(session, change)
    if change is not None:
        log.warning("account %s: SMTP login refused: %s", account, outcome.response)
        await relay.publish_committed([change])
    else:
        log.info("account %s: SMTP works again", account)
    return True


async def record_gateway(db: Database, gateway: str, outcome: Outcome) -> None:
    """Best effort: a gateway's counters never stand in the way of the message's record."""
    try:
        async with db.transaction() as session:
            if outcome.kind == "sent":
                await session.execute(_GATEWAY_SENT, {"id": gateway})
            else:
                await session.execute(_GATEWAY_FAILED, {"id": gateway, "error": status(outcome)})
    except Exception as exc:
        log.warning("could not update gateway %s: %r", gateway, exc)
