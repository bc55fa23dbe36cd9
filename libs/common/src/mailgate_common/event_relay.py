"""Transactional outbox for events.

A service stages events in ``pending_events`` inside the same transaction as
the state change they describe, then publishes them once committed.  If the
process dies between commit and publish, or the broker is away, the relay loop
publishes whatever is left, so an event is never lost (it may be published
twice, which consumers tolerate).

The relay never holds a transaction open while it talks to the broker: it
claims a batch of rows (a short lease), commits, publishes, then deletes what
the broker confirmed.  A broker that blocks publishers therefore costs the
database nothing, and what was not confirmed is tried again when its lease lapses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.db.models import PendingEvent

log = logging.getLogger(__name__)

# Bounds one merged wake-up's size (about 60 bytes per message it stands for).
MAX_MERGED_HINTS = 500
# Hints waiting for a broker that does not take them: the oldest are dropped
# (a hint is only a wake-up; the sender's poller finds the work anyway).
MAX_WAITING_HINTS = 10_000
HINT_FLUSH_TIMEOUT = 5.0
# How long a relay's claim on a row lasts: longer than a publish may take.
RELAY_LEASE_SECONDS = 30

CLAIM_STALE_SQL = text(
    """
    UPDATE pending_events SET claimed_until = now() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT id FROM pending_events
        WHERE created_at < now() - make_interval(secs => :stale)
          AND (claimed_until IS NULL OR claimed_until < now())
          AND id <> ALL(CAST(:mine AS text[]))
        ORDER BY created_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    RETURNING id, body
    """
)


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
        # Published events whose rows are deleted in batches: one statement per
        # tick instead of one transaction per event.
        self._published: set[str] = set()
        self._in_flight: set[str] = set()
        self._hints: list[events.SubmissionQueued] = []
        self._hint_writer: asyncio.Task[None] | None = None

    def publish_hint(self, event: events.SubmissionQueued) -> None:
        """Publish a wake-up the database can do without (the row it describes is
        found again by polling), so losing it costs latency, never data.

        Returns at once: nobody waits for a hint.  Hints asked for while one is
        being written are merged into the next (``SubmissionQueued.also``), so a
        burst of submits costs a few publishes instead of one each."""
        self._hints.append(event)
        if len(self._hints) > MAX_WAITING_HINTS:
            dropped = len(self._hints) - MAX_WAITING_HINTS
            del self._hints[:dropped]
            log.warning("broker not taking wake-ups: dropped %d (pollers will find the work)", dropped)
        if self._hint_writer is None or self._hint_writer.done():
            self._hint_writer = asyncio.create_task(self._publish_hints())

    async def _publish_hints(self) -> None:
        while self._hints:
            batch, self._hints = self._hints[:MAX_MERGED_HINTS], self._hints[MAX_MERGED_HINTS:]
            first = batch[0]
            merged = msgspec.structs.replace(
                first, also={e.queue_id: e.traceparent or "" for e in batch[1:]}
            ) if len(batch) > 1 else first
            try:
                await self._bus.publish(merged, confirm=False)
            except Exception as exc:
                log.warning("could not publish %s (pollers will find the work): %r", first.routing_key, exc)

    async def flush_hints(self) -> None:
        """Let the hints asked for so far go out (at shutdown; at most a few seconds)."""
        if self._hint_writer is not None and not self._hint_writer.done():
            await asyncio.wait({self._hint_writer}, timeout=HINT_FLUSH_TIMEOUT)

    async def publish_committed(self, committed: Sequence[events.Event]) -> None:
        """Publish events whose transaction committed, all confirms in flight at once;
        whatever fails is left to the relay loop."""
        if not committed:
            return
        ids = [e.id for e in committed]
        # In flight: the relay loop must not publish these a second time meanwhile.
        self._in_flight.update(ids)
        try:
            results = await asyncio.gather(*(self._bus.publish(e) for e in committed), return_exceptions=True)
        finally:
            self._in_flight.difference_update(ids)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("publish failed for %d events, relay will retry: %r", len(failed), failed[0])
        self._published.update(i for i, r in zip(ids, results, strict=True) if not isinstance(r, BaseException))

    async def forget_published(self) -> None:
        """Delete the rows of events already published; a crash before this only
        means they are published once more, which consumers tolerate."""
        if not self._published:
            return
        ids = list(self._published)
        self._published.difference_update(ids)
        try:
            async with self._db.transaction() as session:
                await session.execute(delete(PendingEvent).where(PendingEvent.id.in_(ids)))
        except Exception as exc:
            self._published.update(ids)
            log.warning("could not clear published events: %r", exc)

    async def relay_once(self, batch: int = 200) -> int:
        """Publish events left behind by a crash or an outage; returns how many were published."""
        # Being published, or published moments ago and not yet forgotten, by us.
        mine = list(self._published | self._in_flight)
        async with self._db.transaction() as session:
            rows = (await session.execute(CLAIM_STALE_SQL, {
                "lease": RELAY_LEASE_SECONDS, "stale": self._stale_after, "mine": mine, "batch": batch,
            })).all()
        if not rows:
            return 0
        decoded: list[tuple[str, events.Event]] = []
        for row in rows:
            try:
                decoded.append((row.id, events.decode(row.body)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # Written by a newer or broken version: kept (claimed again later), never lost.
                log.error("pending event %s does not decode: %s", row.id, exc)
        results = await asyncio.gather(*(self._bus.publish(event) for _, event in decoded),
                                       return_exceptions=True)
        published = [id_ for (id_, _), r in zip(decoded, results, strict=True) if not isinstance(r, BaseException)]
        if published:
            async with self._db.transaction() as session:
                await session.execute(delete(PendingEvent).where(PendingEvent.id.in_(published)))
        failed = len(decoded) - len(published)
        if failed:
            # Left claimed: tried again once the lease lapses, not in a tight loop.
            log.warning("relay: %d of %d events not published yet", failed, len(decoded))
        return len(published) if not failed else 0

    async def run(self, interval: float = 2.0, flush_interval: float = 0.2) -> None:
        next_relay = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.forget_published()
                if loop.time() >= next_relay:
                    next_relay = loop.time() + interval
                    while await self.relay_once() > 0:
                        pass
            except asyncio.CancelledError:
                await self.flush_hints()
                await self.forget_published()
                raise
            except Exception as exc:
                log.warning("event relay: %r", exc)
            await asyncio.sleep(flush_interval)
