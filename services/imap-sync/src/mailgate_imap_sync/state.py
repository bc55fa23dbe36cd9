"""Account connection state: stored on the account, announced once per change."""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from sqlalchemy import select

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.event_relay import EventRelay, stage

ACCOUNT_STATES = Gauge(
    "mailgate_imap_account_states", "Accounts watched by this replica, by connection state", ["state"]
)
STATES = ("connecting", "connected", "authenticationError", "connectError", "disconnected")
_held: dict[str, str] = {}


def _publish_counts() -> None:
    for name in STATES:
        ACCOUNT_STATES.labels(name).set(sum(1 for s in _held.values() if s == name))


def forget(account: str) -> None:
    """This replica no longer watches the account."""
    if _held.pop(account, None) is not None:
        _publish_counts()


async def set_state(db: Database, relay: EventRelay, account: str, state: str,
                    error: str | None = None) -> bool:
    """Store ``state``; stage an ``account.state`` event only if it changed."""
    _held[account] = state
    _publish_counts()
    change: events.AccountState | None = None
    async with db.transaction() as session:
        row = await session.scalar(select(Account).where(Account.id == account).with_for_update())
        if row is None:
            return False
        last_error: dict[str, Any] | None = (
            {"state": state, "error": error, "time": events.iso(events.utcnow())} if error else None
        )
        if row.state != state:
            change = events.AccountState(account=account, state=state, error=error)  # type: ignore[arg-type]
            stage(session, change)
        row.state = state
        if error or state == "connected":
            row.last_error = last_error
    if change is not None:
        await relay.publish_committed([change])
    return change is not None
