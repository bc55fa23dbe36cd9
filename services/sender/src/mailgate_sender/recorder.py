"""Recording delivery outcomes: many messages per statement, one commit for all.

Each message's outcome is three writes that must land together: the guarded
state change (only while its claim is still held), the attempt row, and the
events staged for publishing (transactional outbox).  The writer takes every
outcome that is waiting (``mailgate_common.batching``) and writes them in ONE
statement (data-modifying CTEs, so it is one round trip and one atomic, durable
commit), while the next batch gathers.  Only after that commit are the events
published - several messages' confirms in flight at once - so a ``messageSent``
never announces a mark the database could still lose.  Publishing never holds
up the next write: events the broker does not confirm are left to the relay,
while an outcome left unwritten would let its claim lapse and its message go
out again.

So an outcome is always written: a failed batch is written again one by one
(one bad outcome must not fail the others), a database outage is waited out
(the claims stay ours: the heartbeat renews them, and the statement is guarded
by the claim token, so a retry after a commit whose answer was lost changes
nothing), and one record that still fails is written without the server's
text, or at last as its bare state change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

import msgspec

from mailgate_common import events, lifecycle
from mailgate_common.batching import Batcher
from mailgate_common.db import Database
from mailgate_common.db.session import CONNECTION_ERRORS
from mailgate_common.event_relay import EventRelay
from mailgate_common.failures import is_transient
from mailgate_common.text import clean_optional
from mailgate_sender.claims import Claim

log = logging.getLogger(__name__)

# Every outcome leaves "sending"; the guards below rely on it.
assert all(t.from_states == (lifecycle.SENDING,)
           for t in (lifecycle.MARK_SENT, lifecycle.DEFER, lifecycle.FAIL, lifecycle.MARK_UNKNOWN))

# Characters of an error kept when a record had to be written without the server's text.
SHORT_ERROR = 200
# Fields of the sending events that carry a server's or an exception's text.
_TEXT_FIELDS = ("response", "error", "smtp_response")
# Seconds between writes during an outage, the last one repeated while it lasts.
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)

RECORD_SQL = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::int[],
                         $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::bool[])
        AS v(id, token, state, attempt, last_error, smtp_response, next_attempt_at, finished_at,
             outcome, server, smtp_code, smtp_status, response, error, started_at, authenticated)
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
                                   response, error, started_at, authenticated)
    SELECT v.id, v.attempt, v.outcome, v.server, v.smtp_code, v.smtp_status, v.response, v.error,
           v.started_at, v.authenticated
    FROM v JOIN done ON done.id = v.id
), staged AS (
    INSERT INTO pending_events (id, routing_key, body)
    SELECT e.id, e.routing_key, e.body
    FROM unnest($17::text[], $18::text[], $19::text[], $20::bytea[]) AS e(queue_id, id, routing_key, body)
    JOIN done ON done.id = e.queue_id
)
SELECT id FROM done
"""


# The last resort for one outcome: its state alone (no attempt row, no events).
STATE_SQL = f"""
UPDATE outbox
SET state = $3, attempts_made = $4, last_error = $5, claim_token = NULL, claimed_until = NULL,
    next_attempt_at = COALESCE($6, next_attempt_at), finished_at = COALESCE($7, finished_at), updated_at = now()
WHERE id = $1 AND claim_token = $2 AND state = '{lifecycle.SENDING}'
RETURNING id
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
    outcome: str  # the attempt row's outcome: sent | deferred | failed | unknown
    server: str | None
    smtp_code: int | None
    smtp_status: str | None
    response: str | None
    error: str | None
    started_at: datetime
    events: tuple[events.Event, ...]
    authenticated: bool | None = None  # False: sent through a relay that offered no AUTH

    def minimal(self) -> Record:
        """This outcome without the server's text: its state, attempt and a short error."""
        short = clean_optional(self.last_error or self.error, SHORT_ERROR)
        return dataclasses.replace(
            self, last_error=None if self.state == lifecycle.SENT else short, smtp_response=None,
            response=None, error=short, events=tuple(_plain(e) for e in self.events),
        )


def _plain(event: events.Event) -> events.Event:
    texts = {name: clean_optional(value, SHORT_ERROR)
             for name in _TEXT_FIELDS if isinstance(value := getattr(event, name, None), str)}
    return msgspec.structs.replace(event, **texts) if texts else event


class Recorder:
    def __init__(self, db: Database, relay: EventRelay, max_batch: int = 500) -> None:
        self._db = db
        self.relay = relay  # also for the events about accounts the deliverer stages itself
        # A failed batch is written again item by item, unless the database is
        # away: then each would fail alike.
        self._batches: Batcher[Record, bool] = Batcher("outcomes", self._write_and_publish, max_batch,
                                                         split_on_failure=True, unsplittable=CONNECTION_ERRORS)
        self._publishing: set[asyncio.Task[None]] = set()

    async def record(self, record: Record) -> bool:
        """Write ``record`` with the next batch; False if its claim was lost meanwhile."""
        return await self._batches.submit(record)

    async def _write_and_publish(self, records: list[Record]) -> list[bool]:
        try:
            kept = await self._write(records)
            written = records
        except Exception as exc:
            if len(records) > 1 or is_transient(exc):
                raise  # written again one by one
            kept, written = await self._write_without_text(records[0], exc)
        committed = [e for r in written if r.claim.queue_id in kept for e in r.events]
        if committed:
            # Not awaited: the next batch is written meanwhile.
            task = asyncio.create_task(self.relay.publish_committed(committed))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        return [r.claim.queue_id in kept for r in records]

    async def _write(self, records: list[Record]) -> set[str]:
        columns: list[list[object]] = [[] for _ in range(16)]
        for r in records:
            for column, value in zip(columns, (
                r.claim.queue_id, r.claim.token, r.state, r.attempt, r.last_error, r.smtp_response,
                r.next_attempt_at, r.finished_at, r.outcome, r.server, r.smtp_code, r.smtp_status,
                r.response, r.error, r.started_at, r.authenticated,
            ), strict=True):
                column.append(value)
        staged: list[list[object]] = [[], [], [], []]
        for r in records:
            for event in r.events:
                staged[0].append(r.claim.queue_id)
                staged[1].append(event.id)
                staged[2].append(event.routing_key)
                staged[3].append(events.encode(event))
        return await self._retrying(RECORD_SQL, *columns, *staged, what=f"{len(records)} outcomes")

    async def _write_without_text(self, record: Record, exc: Exception) -> tuple[set[str], list[Record]]:
        """One outcome failed, and not for an outage: unwritten, its claim would lapse and
        the message go out again, so it is written without what may have failed."""
        log.error("recording %s (%s) failed: %r; recording it without the server's text",
                  record.claim.queue_id, record.state, exc)
        minimal = record.minimal()
        try:
            return await self._write([minimal]), [minimal]
        except Exception as again:
            if is_transient(again):
                raise
            log.error("recording %s without its text failed too: %r; recording its state alone",
                      record.claim.queue_id, again)
        kept = await self._retrying(
            STATE_SQL, record.claim.queue_id, record.claim.token, record.state, record.attempt,
            f"the outcome could not be recorded in full ({type(exc).__name__})", record.next_attempt_at,
            record.finished_at, what=f"the state of {record.claim.queue_id}",
        )
        return kept, []

    async def _retrying(self, sql: str, *args: object, what: str) -> set[str]:
        """Run ``sql`` (whose rows are ids) until it succeeds or fails for another reason than an outage."""
        failures = 0
        while True:
            try:
                async with self._db.statement_connection() as conn:
                    rows = await conn.fetch(sql, *args)
                return {row[0] for row in rows}
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning("recording %s failed, retrying in %.1fs: %r", what, delay, exc)
                await asyncio.sleep(delay)

    async def drain(self) -> None:
        """Wait until queued outcomes are written and their events published
        (callers bound the wait: whatever is left, the event relay publishes)."""
        await self._batches.drain()
        while self._publishing:
            await asyncio.wait(set(self._publishing))
