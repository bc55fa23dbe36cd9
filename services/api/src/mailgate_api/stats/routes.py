"""EmailEngine's ``GET /v1/stats``: what mailgate can answer truthfully from its tables."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy import text

from mailgate_api.deps import Resources
from mailgate_api.settings.queues import job_counts

# EmailEngine's connection-state names; mailgate's "new" (not connected yet) is its "init".
CONNECTION_STATES = ("init", "connected", "connecting", "syncing", "authenticationError",
                     "connectError", "unset", "disconnected", "paused", "unassigned")
_STATE_NAMES = {"new": "init"}

_ACCOUNTS = text("SELECT state, jsonb_typeof(imap) IS DISTINCT FROM 'object' AS send_only, count(*) "
                 "FROM accounts GROUP BY 1, 2")
_COUNTERS = text("""
SELECT 'submit:' || outcome, count(*) FROM delivery_attempts
 WHERE finished_at > now() - make_interval(secs => :seconds) GROUP BY outcome
UNION ALL
SELECT 'webhooks:' || state, count(*) FROM webhook_deliveries
 WHERE created_at > now() - make_interval(secs => :seconds) AND state IN ('delivered', 'failed')
 GROUP BY state
""")


def _version() -> str:
    try:
        return version("mailgate-api")
    except PackageNotFoundError:
        return "0.0.0"


class StatsController(Controller):
    tags = ["Stats"]

    @get("/v1/stats", summary="Accounts by connection state, queue counts and recent counters")
    async def stats(
        self,
        res: Resources,
        seconds: Annotated[int, Parameter(ge=1, le=31 * 24 * 3600,
                                          description="Counter window in seconds")] = 3600,
    ) -> dict[str, Any]:
        connections = dict.fromkeys(CONNECTION_STATES, 0)
        accounts = 0
        async with res.db.sessions() as session:
            for state, send_only, count in (await session.execute(_ACCOUNTS)).all():
                accounts += count
                # A send-only account has no IMAP connection: EmailEngine counts it as "unset".
                name = "unset" if send_only else _STATE_NAMES.get(str(state), str(state))
                connections[name] = connections.get(name, 0) + count
            counters = {key: count for key, count in
                        (await session.execute(_COUNTERS, {"seconds": seconds})).all()}
            queues = {name: await job_counts(session, name) for name in ("submit", "notify")}
        return {
            "version": _version(),
            "accounts": accounts,
            "python": platform.python_version(),
            "arch": platform.machine(),
            "queues": queues,
            "connections": connections,
            "counters": counters,
        }
