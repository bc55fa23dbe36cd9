"""EmailEngine's queue view (``/v1/settings/queue/{queue}``) over mailgate's tables:
``submit`` is the outbox, ``notify`` the webhook deliveries; ``documents`` has no jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_SUBMIT = text("""
SELECT count(*) FILTER (WHERE state = 'sending'),
       count(*) FILTER (WHERE state IN ('queued', 'deferred') AND next_attempt_at > now()),
       count(*) FILTER (WHERE state IN ('queued', 'deferred') AND next_attempt_at <= now())
FROM outbox WHERE state IN ('sending', 'queued', 'deferred')
""")
_NOTIFY = text("""
SELECT count(*) FILTER (WHERE claimed_until > now()),
       count(*) FILTER (WHERE (claimed_until IS NULL OR claimed_until <= now()) AND next_attempt_at > now()),
       count(*) FILTER (WHERE (claimed_until IS NULL OR claimed_until <= now()) AND next_attempt_at <= now())
FROM webhook_deliveries WHERE state IN ('pending', 'retrying')
""")


async def job_counts(session: AsyncSession, queue: str) -> dict[str, Any]:
    """``{active, delayed, paused, waiting}`` (paused is always 0, as in EmailEngine 2.79)."""
    query = {"submit": _SUBMIT, "notify": _NOTIFY}.get(queue)
    active = delayed = waiting = 0
    if query is not None:
        row = (await session.execute(query)).one()
        active, delayed, waiting = int(row[0]), int(row[1]), int(row[2])
    return {"active": active, "delayed": delayed, "paused": 0, "waiting": waiting}
