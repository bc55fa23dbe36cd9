"""Recording attempt results: many per transaction, and none lost to a bad row.

One statement writes a whole batch (each delivery's new state, only while this
replica's claim still holds it, plus its attempt row); the health of the
endpoints in the batch is updated in the same transaction, applying the
results in order.

When a write fails:

* **The database is away** (:func:`mailgate_common.failures.is_transient`): the
  batch is written again, backing off, for as long as the outage lasts.  The
  claims in it lapse meanwhile (after the claim hold), but nobody can take a
  delivery over while the database is away, and this replica claims nothing
  while results wait here (:attr:`AttemptRecorder.waiting_out_outage`), so
  once the database is back its results go in before its own pollers could
  claim those deliveries again.  Another replica's poller may still get there
  first when the outage outlasted the claim: it POSTs the delivery again (same
  ``webhook-id``) and records it, and this result is dropped because its claim
  token no longer matches.  That is the at-least-once of webhooks, and an
  outage longer than the claim hold with several replicas running is the only
  recorder failure that can lead to it.  On shutdown an outage is waited out
  for at most the stop grace.
* **Anything else** (a row PostgreSQL refuses): the batch is written one result
  at a time, and a result that fails alone is written without its details
  (state, attempt and status; no excerpt or error text), so an answered
  attempt is never repeated because its details could not be stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg

from mailgate_common import events
from mailgate_common.batching import Batcher
from mailgate_common.db import Database
from mailgate_common.failures import is_transient
from mailgate_common.settings import Settings
from mailgate_webhooks import retry, store
from mailgate_webhooks.jobs import AttemptResult

log = logging.getLogger(__name__)

# Results per record transaction.
RECORD_BATCH = 256
# Backoff between writes while the database is away.
OUTAGE_FIRST_DELAY = 0.5
OUTAGE_MAX_DELAY = 2.0


class AttemptRecorder:
    def __init__(self, settings: Settings, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        # _write never raises: its own fallbacks replace the batcher's splitting.
        self.batches: Batcher[AttemptResult, None] = Batcher(
            "webhook record", self._write, max_batch=RECORD_BATCH, split_on_failure=False)
        self._give_up_at: float | None = None
        self._in_outage = 0  # writes waiting for the database to come back

    def waiting_out_outage(self) -> bool:
        """Are results waiting for the database to come back?"""
        return self._in_outage > 0

    async def record(self, result: AttemptResult) -> None:
        """Returns once ``result`` is written (or, failing that, logged)."""
        await self.batches.submit(result)

    async def stop(self, grace: float) -> None:
        """Write what is queued, waiting out an outage for at most ``grace`` seconds."""
        self._give_up_at = self.clock() + grace
        await self.batches.drain()

    async def _write(self, results: list[AttemptResult]) -> list[None]:
        try:
            await self._write_through_outages(results)
        except Exception as exc:
            if is_transient(exc):
                log.error("%d webhook attempt(s) not recorded before stopping, the database is away "
                          "(%r): their deliveries will be attempted again", len(results), exc)
            elif len(results) > 1:
                log.warning("recording %d webhook attempts failed (%r); recording them one by one",
                            len(results), exc)
                for result in results:
                    await self._write([result])
            else:
                await self._write_without_details(results[0], exc)
        return [None] * len(results)

    async def _write_without_details(self, result: AttemptResult, exc: Exception) -> None:
        log.warning("webhook attempt %d of delivery %d could not be recorded (%r); "
                    "recording it without its details", result.attempt, result.job.delivery_id, exc)
        try:
            await self._write_through_outages([result.without_details()])
        except Exception as again:
            log.error("webhook attempt %d of delivery %d could not be recorded at all: %r",
                      result.attempt, result.job.delivery_id, again)

    async def _write_through_outages(self, results: Sequence[AttemptResult]) -> None:
        delay = OUTAGE_FIRST_DELAY
        waiting = False
        try:
            while True:
                try:
                    await self._write_once(results)
                    return
                except Exception as exc:
                    if not is_transient(exc) or (self._give_up_at is not None and self.clock() >= self._give_up_at):
                        raise
                    log.warning("recording %d webhook attempt(s): the database is away (%r); retrying in %gs",
                                len(results), exc, delay)
                if not waiting:
                    waiting = True
                    self._in_outage += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, OUTAGE_MAX_DELAY)
        finally:
            if waiting:
                self._in_outage -= 1

    async def _write_once(self, results: Sequence[AttemptResult]) -> None:
        async with store.lazy_transaction(self.db) as conn:
            recorded = await store.record_attempts(conn, [r.row() for r in results])
            written = {r.delivery_id for r in recorded}
            flagged = {r.endpoint_id for r in recorded if r.health_may_change and r.endpoint_id}
            if flagged:
                await self._record_health(conn, [
                    r for r in results if r.job.delivery_id in written and r.job.endpoint_id in flagged
                ])

    async def _record_health(self, conn: asyncpg.Connection, results: list[AttemptResult]) -> None:
        health = await store.lock_endpoint_health(conn, [r.job.endpoint_id for r in results if r.job.endpoint_id])
        changed: dict[str, retry.EndpointHealth] = {}
        recovered: set[str] = set()
        s = self.settings
        for result in results:
            endpoint_id = result.job.endpoint_id or ""
            before = health.get(endpoint_id)
            if before is None:
                continue  # deleted meanwhile
            if result.answered:
                if before.consecutive_failures == 0 and before.failing_since is None:
                    continue
                if before.failing_since is not None:
                    log.info("webhook endpoint %s recovered", endpoint_id)
                    recovered.add(endpoint_id)
                after = retry.HEALTHY
            else:
                after = retry.after_failure(before, events.utcnow(), s.webhook_failing_threshold,
                                            s.webhook_failing_after, s.webhook_retry_base, s.webhook_retry_max)
                if after.failing_since is not None and before.failing_since is None:
                    log.warning("webhook endpoint %s is failing; backing off until %s", endpoint_id,
                                events.iso(after.backoff_until))
                    recovered.discard(endpoint_id)
            health[endpoint_id] = changed[endpoint_id] = after
        await store.write_endpoint_health(conn, changed)
        await store.release_waiting_retries(
            conn, sorted(e for e in recovered if health[e].failing_since is None))
