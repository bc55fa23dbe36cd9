"""Recording delivery outcomes: many messages per statement, one commit for all.

Each message's outcome is three writes that must land together: the guarded
state change (only while its claim is still held), the attempt row, and the
events staged for publishing (transactional outbox).  The writer takes every
outcome that is waiting (``mailgate_common.batching``) and writes them in ONE
statement (data-modifying CTEs, so it is one round trip and one atomic, durable
commit), while the next batch gathers.  Only after that commit are the events published - several messages'
confirms in flight at once - so a ``messageSent`` never announces a mark the
database could still lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from mailgate_common import events, lifecycle
from mailgate_common.batching import Batcher
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_sender.claims import Claim

log = logging.getLogger(__name__)

# Every outcome leaves "sending"; the guard below relies on it.
assert all(t.from_states == (lifecycle.SENDING,) for t in (lifecycle.MARK_SENT, lifecycle.DEFER, lifecycle.FAIL))

# Events in flight to the broker before the writer waits for it (backpressure).
MAX_UNPUBLISHED = 2000

RECORD_SQL = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::int[],
                         $12::text[], $13::text[], $14::text[], $15::timestamptz[])
        AS v(id, token, state, attempt, last_error, smtp_response, next_attempt_at, finished_at,
             outcome, server, smtp_code, smtp_status, response, error, started_at)
), done AS (
    UPDATE outbox o
    SET state = v.state, attempts_made = v.attempt, claim_token = NULL, claimed_until = NULL,
        last_error = v.last_error, smtp_response = v.smtp_response,
        next_attempt_at = COALESCE(v.next_attempt_at, o.next_attempt_at),
        finished_at = COALESCE(v.finished_at, o.finished_at), updated_at = now()
    FROM v
    WHERE o.id = v.id AND o.claim_token = v.token AND o.state = '{lifecycle.SENDING}'
    RETURNING o.id
), attempts AS (
    INSERT INTO delivery_attempts (queue_id, attempt, outcome, server, smtp_code, smtp_status,
                                   response, error, started_at)
    SELECT v.id, v.attempt, v.outcome, v.server, v.smtp_code, v.smtp_status, v.response, v.error,
           v.started_at
    FROM v JOIN done ON done.id = v.id
), staged AS (
    INSERT INTO pending_events (id, routing_key, body)
    SELECT e.id, e.routing_key, e.body
    FROM unnest($16::text[], $17::text[], $18::text[], $19::bytea[]) AS e(queue_id, id, routing_key, body)
    JOIN done ON done.id = e.queue_id
)
SELECT id FROM done
"""


@dataclass(frozen=True, slots=True)
class Record:
    """One attempt's outcome: the message's new state, its attempt row, its events."""

    claim: Claim
    state: str
    attempt: int
    last_error: str | None
    smtp_response: str | None
    next_attempt_at: datetime | None
    finished_at: datetime | None
    outcome: str  # the attempt row's outcome: sent | deferred | failed
    server: str | None
    smtp_code: int | None
    smtp_status: str | None
    response: str | None
    error: str | None
    started_at: datetime
    events: tuple[events.Event, ...]


class Recorder:
    def __init__(self, db: Database, relay: EventRelay, retry_for: float, max_batch: int = 500) -> None:
        self._db = db
        self._relay = relay
        # A write that fails (database restarting) is retried while the claims are
        # still ours; the statement is guarded by the claim token, so a retry after
        # a commit whose answer was lost changes nothing.
        self._retry_for = retry_for
        self._batches: Batcher[Record, bool] = Batcher("outcomes", self._write_and_publish, max_batch,
                                                         split_on_failure=False)
        self._publishing: set[asyncio.Task[None]] = set()
        self._unpublished = 0  # events committed and not yet confirmed by the broker

    async def record(self, record: Record) -> bool:
        """Write ``record`` with the next batch; False if its claim was lost meanwhile."""
        return await self._batches.submit(record)

    async def _write_and_publish(self, records: list[Record]) -> list[bool]:
        while self._unpublished > MAX_UNPUBLISHED and self._publishing:
            # The broker is behind: sending on would only grow a backlog that the
            # relay loop would find "stale" and publish a second time.
            await asyncio.wait(set(self._publishing), return_when=asyncio.FIRST_COMPLETED)
        kept = await self._write(records)
        committed = [e for r in records if r.claim.queue_id in kept for e in r.events]
        if committed:
            self._unpublished += len(committed)
            task = asyncio.create_task(self._publish(committed))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        return [r.claim.queue_id in kept for r in records]

    async def _write(self, records: list[Record]) -> set[str]:
        columns: list[list[object]] = [[] for _ in range(15)]
        for r in records:
            for column, value in zip(columns, (
                r.claim.queue_id, r.claim.token, r.state, r.attempt, r.last_error, r.smtp_response,
                r.next_attempt_at, r.finished_at, r.outcome, r.server, r.smtp_code, r.smtp_status,
                r.response, r.error, r.started_at,
            ), strict=True):
                column.append(value)
        staged: list[list[object]] = [[], [], [], []]
        for r in records:
            for event in r.events:
                staged[0].append(r.claim.queue_id)
                staged[1].append(event.id)
                staged[2].append(event.routing_key)
                staged[3].append(events.encode(event))
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                async with self._db.statement_connection() as conn:
                    rows = await conn.fetch(RECORD_SQL, *columns, *staged)
                return {row[0] for row in rows}
            except Exception as exc:
                if time.monotonic() >= deadline:
                    log.error("could not record %d outcomes: %r", len(records), exc)
                    raise
                log.warning("recording %d outcomes failed, retrying: %r", len(records), exc)
                await asyncio.sleep(0.5)

    async def _publish(self, committed: list[events.Event]) -> None:
        # One call for the whole batch: its publishes are written in this order (one
        # message's deliveryError before its failed) and wait for their confirms
        # side by side, without a task per message around them.
        try:
            await self._relay.publish_committed(committed)
        finally:
            self._unpublished -= len(committed)

    async def drain(self) -> None:
        """Wait until queued outcomes are written and their events published
        (callers bound the wait: whatever is left, the event relay publishes)."""
        await self._batches.drain()
        while self._publishing:
            await asyncio.wait(set(self._publishing))
