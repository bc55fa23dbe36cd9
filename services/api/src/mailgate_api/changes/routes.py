"""EmailEngine's ``GET /v1/changes``: account state changes as server-sent events.

Each stream polls the accounts that changed since its last look (a few times
a second, one indexed query) and sends EmailEngine's frame for every state
that differs from what it sent before:
``event: message`` / ``data: {"account", "type": "state", "key", "payload"}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from litestar import Controller, get
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from sqlalchemy import text

from mailgate_api.deps import Resources
from mailgate_api.stats.routes import _version
from mailgate_common.db import Database

POLL_INTERVAL = 0.5
KEEP_ALIVE = 90.0  # EmailEngine's: a comment frame after this long without events
# Rows committed slightly out of order with their updated_at are read again.
OVERLAP = timedelta(seconds=2)

_SNAPSHOT = text("SELECT id, state, now() FROM accounts")
_CHANGED = text("SELECT id, state, last_error, updated_at FROM accounts WHERE updated_at >= :since")


async def _changes(db: Database) -> AsyncIterator[ServerSentEventMessage]:
    yield ServerSentEventMessage(comment=f"mailgate v{_version()}")
    async with db.sessions() as session:
        rows = (await session.execute(_SNAPSHOT)).all()
    known = {account: state for account, state, _ in rows}
    since: datetime | None = rows[0][2] if rows else None
    quiet = 0.0
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        async with db.sessions() as session:
            if since is None:
                since = await session.scalar(text("SELECT now() - interval '1 hour'"))
            changed = (await session.execute(_CHANGED, {"since": since - OVERLAP})).all()
        sent = False
        for account, state, last_error, updated_at in changed:
            since = max(since, updated_at)
            if known.get(account) == state:
                continue
            known[account] = state
            payload: dict[str, object] = {"state": state}
            if state != "connected" and last_error:
                payload["error"] = last_error
            frame = {"account": account, "type": "state", "key": state, "payload": payload}
            yield ServerSentEventMessage(data=json.dumps(frame), event="message")
            sent = True
        quiet = 0.0 if sent else quiet + POLL_INTERVAL
        if quiet >= KEEP_ALIVE:
            quiet = 0.0
            yield ServerSentEventMessage(comment="still here")


class ChangesController(Controller):
    tags = ["Account"]

    @get("/v1/changes", summary="Stream account state changes (server-sent events)")
    async def changes(self, res: Resources) -> ServerSentEvent:
        return ServerSentEvent(_changes(res.db), headers={"X-Accel-Buffering": "no",
                                                          "Cache-Control": "no-cache"})
