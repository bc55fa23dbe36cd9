"""The notify queue's pause and concurrency, as the API stores them.

``PUT /v1/settings/queue/notify`` writes the Setting row ``queue:notify``
(``{"paused", "concurrency"}``); every replica reads it every few seconds,
one primary-key lookup, and applies it to its scheduler.  While paused the
deliveries stay stored (they keep arriving and queuing); they are sent once
the queue resumes.
"""

from __future__ import annotations

import asyncio
import logging

from mailgate_common import service_settings
from mailgate_common.db import Database
from mailgate_webhooks.scheduler import Scheduler

log = logging.getLogger(__name__)

QUEUE = "notify"
READ_EVERY = 2.0


def read_interval(poll_interval: float) -> float:
    """How often to read the state: a few poll intervals, between half a second and READ_EVERY."""
    return max(0.5, min(READ_EVERY, poll_interval * 5))


def apply(scheduler: Scheduler, state: dict[str, object], default_total: int) -> None:
    paused = bool(state.get("paused"))
    if paused != scheduler.paused:
        log.info("notify queue %s", "paused" if paused else "resumed")
    scheduler.paused = paused
    concurrency = state.get("concurrency")
    total = concurrency if isinstance(concurrency, int) and concurrency > 0 else default_total
    if total != scheduler.total:
        scheduler.total = total
    if not paused:
        # Wake a poller that waits for a free slot.
        scheduler.slot_freed.set()


async def follow(db: Database, scheduler: Scheduler, default_total: int, every: float = READ_EVERY) -> None:
    while True:
        try:
            async with db.sessions() as session:
                state = await service_settings.queue_state(session, QUEUE)
            apply(scheduler, state, default_total)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database away: keep the last known state
            log.warning("cannot read the notify queue state: %r", exc)
        await asyncio.sleep(every)
