"""Account connection state: stored on the account, announced once per change."""

from __future__ import annotations

from collections import Counter
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


_counts: Counter[str] = Counter()


def _hold(account: str, state: str | None) -> None:
    # Counted as states change: recounting all accounts on every change cost
    # O(accounts²) while a thousand connect at once.
    previous = _held.pop(account, None)
    if previous is not None:
        _counts[previous] -= 1
        ACCOUNT_STATES.labels(previous).set(_counts[previous])
    if state is not None:
        _held[account] = state
        _counts[state] += 1
        ACCOUNT_STATES.labels(state).set(_counts[state])


def forget(account: str) -> None:
    """This replica no longer watches the account."""
    _hold(account, None)


async def set_state(db: Database, relay: EventRelay, account: str, state: str,
                    error: str | None = None) -> bool:
    """Store ``state``; stage an ``account.state`` event only if it changed."""
    _hold(account, state)
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
