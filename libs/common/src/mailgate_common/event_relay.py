"""Transactional outbox for events.

A service stages events in ``pending_events`` inside the same transaction as
the state change they describe, then publishes them once committed.  If the
process dies between commit and publish, or the broker is away, the relay loop
publishes whatever is left, so an event is never lost (it may be published
twice, which consumers tolerate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.db.models import PendingEvent

log = logging.getLogger(__name__)


def stage(session: AsyncSession, *staged: events.Event) -> None:
    for event in staged:
        session.add(
            PendingEvent(id=event.id, routing_key=event.routing_key, body=events.encode(event))
        )


class EventRelay:
    def __init__(self, db: Database, bus: Bus, *, stale_after: float = 5.0) -> None:
        self._db = db
        self._bus = bus
        self._stale_after = stale_after

    async def publish_committed(self, committed: Sequence[events.Event]) -> None:
        """Publish events whose transaction committed; leftovers go to the relay loop."""
        if not committed:
            return
        try:
            for event in committed:
                await self._bus.publish(event)
        except Exception as exc:
            log.warning("publish failed, relay will retry: %r", exc)
            return
        try:
            async with self._db.transaction() as session:
                await session.execute(
                    delete(PendingEvent).where(PendingEvent.id.in_([e.id for e in committed]))
                )
        except Exception as exc:
            # Already published; the relay may publish once more, which is harmless.
            log.warning("could not clear published events: %r", exc)

    async def relay_once(self, batch: int = 200) -> int:
        """Publish events left behind by a crash or an outage; returns how many."""
        async with self._db.transaction() as session:
            rows = (
                await session.scalars(
                    select(PendingEvent)
                    .where(
                        PendingEvent.created_at
                        < events.utcnow() - timedelta(seconds=self._stale_after)
                    )
                    .order_by(PendingEvent.created_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await self._bus.publish(events.decode(row.body))
                await session.delete(row)
        return len(rows)

    async def run(self, interval: float = 2.0) -> None:
        while True:
            try:
                while await self.relay_once() > 0:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event relay: %r", exc)
            await asyncio.sleep(interval)
