"""mailgate-webhooks: stores a delivery for every subscribed event, then POSTs it.

Events arrive from RabbitMQ and are acked once their deliveries are stored
(many events per transaction, see mailgate_common.batching); attempts and retries run from
the database, so a crash or a long outage of a subscriber loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from typing import Any

from opentelemetry import context as otel_context

from mailgate_common import events, topology
from mailgate_common.batching import Batcher
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_webhooks import maintenance
from mailgate_webhooks.dispatch import Dispatcher, Job, Outcome
from mailgate_webhooks.lanes import Lanes
from mailgate_webhooks.recorder import Recorder

log = logging.getLogger("mailgate.webhooks")

# Events per store transaction (the bus prefetch bounds it in practice) and
# outcomes per record transaction.
STORE_BATCH = 256
# POSTs faster than this (moving average) let a destination have claims queued ahead.
AHEAD_LATENCY = 0.2
RECORD_BATCH = 256


class WebhooksService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.lanes = Lanes(settings.webhook_endpoint_concurrency, settings.webhook_concurrency)
        self.dispatcher = Dispatcher(settings, self.db, self.lanes)
        self.storer: Batcher[tuple[events.Event, otel_context.Context | None], list[Job]] = Batcher(
            "webhook store", self.dispatcher.store, max_batch=STORE_BATCH)
        self.recorder: Batcher[Outcome, None] = Batcher(
            "webhook record", Recorder(settings, self.db).write, max_batch=RECORD_BATCH)
        # Refill a spilled destination once this many of its slots are free, so
        # one claim statement serves several POSTs.
        self.refill_batch = max(1, settings.webhook_endpoint_concurrency // 2)
        # Claimed ahead for a fast destination (at most its concurrency), started
        # as its POSTs finish: its slots then never wait on a claim round trip.
        self.ahead: dict[str, collections.deque[Job]] = {}
        self.refilling: set[str] = set()
        self.latency: dict[str, float] = {}  # moving average of POST seconds
        self.slot_freed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.poller: asyncio.Task[None] | None = None
        self.upkeep: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.WEBHOOKS, self.on_event, self.settings.bus_prefetch)
        self.poller = asyncio.create_task(self.poll_due())
        self.upkeep = asyncio.create_task(self.keep_log())

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        # Returns (and the bus acks) once the event's deliveries are committed.
        jobs = await self.storer.submit((event, otel_context.get_current()))
        for job in jobs:
            # Claimed by the INSERT, slot already taken: POST at once.  If this
            # replica dies first, the claim lapses and a poller finds the row.
            self._spawn(self._attempt(job))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("webhook task crashed: %r", t.exception())

        task.add_done_callback(done)

    async def _attempt(self, job: Job) -> None:
        while True:
            try:
                if not self.dispatcher.usable(job):
                    outcome = None  # waited too long: the claim lapses and a poller retries it
                else:
                    started = time.monotonic()
                    outcome = await self.dispatcher.post(job)
                    seconds = time.monotonic() - started
                    if len(self.latency) > 10000:
                        self.latency.clear()  # destinations come and go
                    self.latency[job.dest] = 0.8 * self.latency.get(job.dest, seconds) + 0.2 * seconds
            except BaseException:
                self._free(job.dest)
                raise
            # The slot is free as soon as the POST is (recording is batched behind
            # it): a delivery claimed ahead for this destination takes it over.
            waiting = self.ahead.get(job.dest)
            following = waiting.popleft() if waiting and not self.stopping else None
            if waiting is not None and not waiting:
                del self.ahead[job.dest]
            if following is None:
                self._free(job.dest)
            else:
                self._pump()
            if outcome is not None and following is not None:
                # Not awaited: the following POST must not wait on a commit.
                self._spawn(self._record(outcome))
            elif outcome is not None:
                await self.recorder.submit(outcome)
            if following is None:
                return
            job = following

    async def _record(self, outcome: Outcome) -> None:
        await self.recorder.submit(outcome)

    def _free(self, dest: str, n: int = 1) -> None:
        self.lanes.give_back(dest, n)
        self.slot_freed.set()
        if not self.stopping:
            self._pump()

    def _pump(self) -> None:
        """Claim more of what this replica stored without a slot, as slots free up."""
        per_dest = self.settings.webhook_endpoint_concurrency
        for dest in list(self.ahead):
            self._start_ahead(dest)
        for dest, n in self.lanes.refillable(self.refill_batch):
            if dest in self.refilling:
                continue
            self.lanes.take(dest, n)
            self.refilling.add(dest)
            self._spawn(self._refill(dest, n, 0))
        for dest in list(self.lanes.spilled):
            # Fast destinations (answers well within a second) also get up to their
            # concurrency claimed ahead; a claim waits at most one quick POST.
            waiting = len(self.ahead.get(dest, ()))
            if (dest not in self.refilling and self.latency.get(dest, 1.0) < AHEAD_LATENCY
                    and waiting <= per_dest // 2 and self.lanes.in_flight.get(dest, 0) >= per_dest):
                self.refilling.add(dest)
                self._spawn(self._refill(dest, 0, per_dest - waiting))

    def _start_ahead(self, dest: str) -> None:
        """Claimed-ahead deliveries into free slots (their attempts finished first)."""
        waiting = self.ahead.get(dest)
        while waiting and self.lanes.room(dest) > 0 and not self.stopping:
            self.lanes.take(dest)
            self._spawn(self._attempt(waiting.popleft()))
        if waiting is not None and not waiting:
            del self.ahead[dest]

    async def _refill(self, dest: str, n: int, extra: int) -> None:
        """Claim ``n`` deliveries for slots already taken plus ``extra`` to run next
        (the caller marked ``dest`` as refilling)."""
        jobs: list[Job] = []
        try:
            jobs = await self.dispatcher.claim_for(dest, n + extra)
        except Exception as exc:
            log.warning("webhook refill for %s failed: %r", dest, exc)
        finally:
            self.refilling.discard(dest)
        if len(jobs) < n + extra:
            # Nothing more due here (or the database is away): the poller takes over.
            self.lanes.drained(dest)
        for job in jobs[:n]:
            self._spawn(self._attempt(job))
        if jobs[n:]:
            self.ahead.setdefault(dest, collections.deque()).extend(jobs[n:])
            self._start_ahead(dest)
        if len(jobs) < n:
            self._free(dest, n - len(jobs))
        elif self.stopping:
            await self._release_ahead()

    async def _release_ahead(self) -> None:
        waiting = [job for queue in self.ahead.values() for job in queue]
        self.ahead.clear()
        if waiting:
            await self.dispatcher.release(waiting)

    async def poll_due(self) -> None:
        while not self.stopping:
            jobs: list[Job] = []
            free = self.lanes.free()
            if free <= 0:
                # Busy: wait for an attempt to finish rather than a poll interval.
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                jobs = await self.dispatcher.claim_due(free)
                excess: list[Job] = []
                for job in jobs:
                    # The query capped each destination by its claims in the database;
                    # this replica's own slots were taken meanwhile by fresh deliveries.
                    if self.lanes.room(job.dest) > 0:
                        self.lanes.take(job.dest)
                        self._spawn(self._attempt(job))
                    else:
                        excess.append(job)
                if excess:
                    await self.dispatcher.release(excess)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook poll failed: %r", exc)
            if len(jobs) < free:
                await asyncio.sleep(self.settings.webhook_poll_interval)

    async def keep_log(self) -> None:
        """Expire spent retries and prune old deliveries (retention), periodically."""
        while not self.stopping:
            try:
                await maintenance.run_once(self.settings, self.db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook log upkeep failed: %r", exc)
            await asyncio.sleep(maintenance.INTERVAL)

    async def stop(self) -> None:
        self.stopping = True
        await self.bus.stop_consuming(grace=10)
        await cancel_and_wait(task for task in (self.poller, self.upkeep) if task)
        await self._release_ahead()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout + 5)
        await self._release_ahead()
        await self.recorder.drain()
        await self.dispatcher.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("webhooks", settings, WebhooksService(settings))
