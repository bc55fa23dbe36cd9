"""Slots: how many POSTs run at once, and which claimed delivery runs next.

A *destination* is a webhook endpoint (its id) or a settings/account URL.
Every POST holds one slot of its destination (at most ``per_destination``)
and one of the replica (at most ``total``).  Slots are taken *before* a
delivery is claimed in the database, so a claimed delivery is POSTed at once
rather than waiting in a local queue where its claim could lapse: a slow
destination fills only its own slots, and its surplus stays unclaimed in the
database for later.

A delivery gets a slot in one of four ways:

* *fresh*: stored already claimed, when its destination had room (plan.py);
* *refill*: a destination with deliveries stored here without a slot
  (*spilled*) claims more as its slots free up, several per claim statement,
  spilled destinations taking turns;
* *ahead*: a destination whose POSTs are fast (moving average under
  ``AHEAD_LATENCY``) also has up to its concurrency claimed ahead; each takes
  over the slot of the POST before it the moment that one ends, without a
  claim round trip in between;
* *due*: the poller claims retries, probes of failing endpoints and what other
  replicas left, up to the free slots.

A claim is only good for a while: a delivery that waited more than
``start_within`` seconds since its claim is not started (its claim would not
cover a whole POST); the claim lapses and a poller retries it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from mailgate_webhooks.jobs import AttemptResult, Job

log = logging.getLogger(__name__)

# POSTs faster than this (moving average, seconds) let a destination have claims ahead.
AHEAD_LATENCY = 0.2
# Weight of the newest POST in a destination's moving average of POST seconds.
LATENCY_WEIGHT = 0.2
# Destinations come and go: forget every average past this many.
MAX_TRACKED_DESTINATIONS = 10_000


class ClaimSource(Protocol):
    async def claim_for(self, dest: str, n: int) -> list[Job]:
        """Up to ``n`` due deliveries of one destination."""

    async def claim_due(self, limit: int) -> list[Job]:
        """Up to ``limit`` due deliveries (retries, probes), round-robin across destinations."""

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hand claimed deliveries back unattempted."""


class Scheduler:
    def __init__(
        self,
        *,
        per_destination: int,
        total: int,
        claims: ClaimSource,
        attempt: Callable[[Job], Awaitable[AttemptResult]],
        record: Callable[[AttemptResult], Coroutine[Any, Any, None]],
        poll_interval: float,
        start_within: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_destination = per_destination
        self.total = total
        self.claims = claims
        self.attempt = attempt
        self.record = record
        self.poll_interval = poll_interval
        self.start_within = start_within
        self.clock = clock
        # Refill a spilled destination once this many of its slots are free, so
        # one claim statement serves several POSTs.
        self.refill_batch = max(1, per_destination // 2)
        self.in_flight: dict[str, int] = {}  # slots taken, by destination
        self.busy = 0  # slots taken in all
        # Destinations with due deliveries stored here but not claimed
        # (insertion order = the order they take turns in).
        self.spilled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.ahead: dict[str, collections.deque[Job]] = {}
        self.refilling: set[str] = set()
        self.latency: dict[str, float] = {}
        self.slot_freed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        # The notify queue is paused (``GET/PUT /v1/settings/queue/notify``): nothing is
        # POSTed, deliveries stay stored and are claimed again once it resumes.
        self.paused = False

    # -- slots ----------------------------------------------------------------------

    def room(self, dest: str) -> int:
        return max(0, min(self.per_destination - self.in_flight.get(dest, 0), self.total - self.busy))

    def free(self) -> int:
        return max(0, self.total - self.busy)

    def take(self, dest: str, n: int = 1) -> None:
        if n:
            self.in_flight[dest] = self.in_flight.get(dest, 0) + n
            self.busy += n

    def give_back(self, dest: str, n: int = 1) -> None:
        """Free ``n`` slots of ``dest`` and hand them to whatever waits."""
        if not n:
            return
        left = self.in_flight[dest] - n
        if left:
            self.in_flight[dest] = left
        else:
            del self.in_flight[dest]
        self.busy -= n
        self.slot_freed.set()
        if not self.stopping:
            self._pump()

    def spill(self, dest: str) -> None:
        """``dest`` has due deliveries stored here without a slot."""
        self.spilled[dest] = None

    def refillable(self) -> list[tuple[str, int]]:
        """Spilled destinations to refill now, and how many slots each gets: a
        destination is refilled once it has ``refill_batch`` free slots (or
        nothing in flight)."""
        out: list[tuple[str, int]] = []
        free = self.free()
        for dest in list(self.spilled):
            if free <= 0:
                break
            if dest in self.refilling:
                continue
            room = min(self.room(dest), free)
            if room >= self.refill_batch or (room > 0 and dest not in self.in_flight):
                out.append((dest, room))
                free -= room
                self.spilled.move_to_end(dest)  # the next pump starts with the others
        return out

    # -- running --------------------------------------------------------------------

    def start(self, job: Job) -> None:
        """Attempt ``job`` now; its slot is already taken."""
        self._spawn(self._run(job))

    def usable(self, job: Job) -> bool:
        """Does the job's claim still cover a whole attempt?"""
        return self.clock() - job.claimed_at < self.start_within

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("webhook task crashed: %r", t.exception())

        task.add_done_callback(done)

    async def _run(self, job: Job) -> None:
        """Attempt ``job``, then each delivery claimed ahead for its slot."""
        while True:
            if self.paused:
                # Handed back unattempted: the poller claims it again after the pause.
                try:
                    await self.claims.release([job])
                finally:
                    self.give_back(job.dest)
                return
            try:
                result = None
                if self.usable(job):
                    started = self.clock()
                    result = await self.attempt(job)
                    self._observe(job.dest, self.clock() - started)
            except BaseException:
                self.give_back(job.dest)
                raise
            # The slot is free as soon as the POST is (recording is batched behind
            # it): a delivery claimed ahead for this destination takes it over.
            waiting = self.ahead.get(job.dest)
            following = waiting.popleft() if waiting and not self.stopping else None
            if waiting is not None and not waiting:
                del self.ahead[job.dest]
            if following is None:
                self.give_back(job.dest)
            else:
                self._pump()
            if result is not None and following is not None:
                # Not awaited: the following POST must not wait on a commit.
                self._spawn(self.record(result))
            elif result is not None:
                await self.record(result)
            if following is None:
                return
            job = following

    def _observe(self, dest: str, seconds: float) -> None:
        if len(self.latency) > MAX_TRACKED_DESTINATIONS:
            self.latency.clear()
        previous = self.latency.get(dest, seconds)
        self.latency[dest] = (1 - LATENCY_WEIGHT) * previous + LATENCY_WEIGHT * seconds

    def _pump(self) -> None:
        """Put free slots to work: claimed-ahead deliveries first, then refills."""
        if self.paused:
            return
        for dest in list(self.ahead):
            self._start_ahead(dest)
        for dest, n in self.refillable():
            self.take(dest, n)
            self.refilling.add(dest)
            self._spawn(self._refill(dest, n, 0))
        per_dest = self.per_destination
        for dest in list(self.spilled):
            # A fast destination with all its slots busy gets up to its concurrency
            # claimed ahead; a claim then waits at most one quick POST.
            waiting = len(self.ahead.get(dest, ()))
            if (dest not in self.refilling and self.latency.get(dest, 1.0) < AHEAD_LATENCY
                    and waiting <= per_dest // 2 and self.in_flight.get(dest, 0) >= per_dest):
                self.refilling.add(dest)
                self._spawn(self._refill(dest, 0, per_dest - waiting))

    def _start_ahead(self, dest: str) -> None:
        """Claimed-ahead deliveries into free slots (the POSTs they waited for ended first)."""
        waiting = self.ahead.get(dest)
        while waiting and self.room(dest) > 0 and not self.stopping:
            self.take(dest)
            self.start(waiting.popleft())
        if waiting is not None and not waiting:
            del self.ahead[dest]

    async def _refill(self, dest: str, n: int, extra: int) -> None:
        """Claim ``n`` deliveries for slots already taken plus ``extra`` to run next
        (the caller marked ``dest`` as refilling)."""
        jobs: list[Job] = []
        try:
            jobs = await self.claims.claim_for(dest, n + extra)
        except Exception as exc:
            log.warning("webhook refill for %s failed: %r", dest, exc)
        finally:
            self.refilling.discard(dest)
        if len(jobs) < n + extra:
            # Nothing more due here (or the database is away): the poller takes over.
            self.spilled.pop(dest, None)
        for job in jobs[:n]:
            self.start(job)
        if jobs[n:]:
            self.ahead.setdefault(dest, collections.deque()).extend(jobs[n:])
            self._start_ahead(dest)
        if len(jobs) < n:
            self.give_back(dest, n - len(jobs))
        elif self.stopping:
            await self.release_ahead()

    async def release_ahead(self) -> None:
        waiting = [job for queue in self.ahead.values() for job in queue]
        self.ahead.clear()
        if waiting:
            await self.claims.release(waiting)

    # -- polling --------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Claim due deliveries for the free slots and start them; how many were claimed."""
        free = self.free()
        jobs = await self.claims.claim_due(free)
        excess: list[Job] = []
        for job in jobs:
            # The query capped each destination by its claims in the database;
            # this replica's own slots may have been taken meanwhile by fresh deliveries.
            if self.room(job.dest) > 0:
                self.take(job.dest)
                self.start(job)
            else:
                excess.append(job)
        if excess:
            await self.claims.release(excess)
        return len(jobs)

    async def poll_due(self) -> None:
        while not self.stopping:
            if self.paused:
                await self.release_ahead()
                await asyncio.sleep(self.poll_interval)
                continue
            if self.free() <= 0:
                # Busy: wait for an attempt to finish rather than a poll interval.
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            free = self.free()
            claimed = 0
            try:
                claimed = await self.poll_once()
            except Exception as exc:
                log.warning("webhook poll failed: %r", exc)
            if claimed < free:
                await asyncio.sleep(self.poll_interval)

    async def stop(self, grace: float) -> None:
        """Start nothing new, hand back what was claimed ahead, let running POSTs end."""
        self.stopping = True
        await self.release_ahead()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace)
        await self.release_ahead()
