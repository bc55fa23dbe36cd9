"""Account connection state: stored on the account, announced once per change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.event_relay import EventRelay, stage


async def set_state(db: Database, relay: EventRelay, account: str, state: str,
                    error: str | None = None) -> bool:
    """Store ``state``; stage an ``account.state`` event only if it changed."""
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
