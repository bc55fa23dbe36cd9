"""The webhooks scheduler's slot accounting, with a fake clock, fake claims and fake POSTs."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import pytest

from mailgate_common import lifecycle
from mailgate_webhooks.jobs import AttemptResult, Job, Target
from mailgate_webhooks.scheduler import Scheduler

T0 = datetime(2026, 1, 5, tzinfo=UTC)
START_WITHIN = 4.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(delivery_id: int, dest: str, claimed_at: float = 100.0) -> Job:
    return Job(delivery_id=delivery_id, claim_token="t", endpoint_id=dest, event_id=f"evt-{delivery_id}",
               event="messageSent", payload=b"{}", attempts_made=0, retry_from=T0,
               target=Target(f"https://{dest}.example/hooks", "whsec_x", None, {}), claimed_at=claimed_at,
               context=None)


class Claims:
    """Due deliveries by destination, handed out in order."""

    def __init__(self) -> None:
        self.stored: dict[str, collections.deque[Job]] = collections.defaultdict(collections.deque)
        self.due: list[Job] = []
        self.claimed_for: list[tuple[str, int]] = []
        self.released: list[int] = []

    async def claim_for(self, dest: str, n: int) -> list[Job]:
        self.claimed_for.append((dest, n))
        waiting = self.stored[dest]
        return [waiting.popleft() for _ in range(min(n, len(waiting)))]

    async def claim_due(self, limit: int) -> list[Job]:
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    async def release(self, jobs: Sequence[Job]) -> None:
        self.released += [j.delivery_id for j in jobs]


class Posts:
    """POSTs that end when the test says so, each taking ``seconds`` on the fake clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.started: list[int] = []
        self.gates: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.recorded: list[int] = []

    async def attempt(self, job: Job) -> AttemptResult:
        self.started.append(job.delivery_id)
        await self.gates[job.delivery_id].wait()
        self.clock.now += self.seconds
        return AttemptResult(job=job, state=lifecycle.WEBHOOK_DELIVERED, attempt=1, status=200, error=None,
                             excerpt="ok", next_attempt_at=None, delivered_at=T0, duration_ms=1, started_at=T0)

    async def record(self, result: AttemptResult) -> None:
        self.recorded.append(result.job.delivery_id)

    def finish(self, *delivery_ids: int) -> None:
        for delivery_id in delivery_ids:
            self.gates[delivery_id].set()


Made = tuple[Scheduler, Claims, Posts, Clock]


@pytest.fixture
async def scheduler() -> AsyncIterator[Callable[..., Made]]:
    made: list[Made] = []

    def make(per_destination: int, total: int, seconds: float = 0.05) -> Made:
        clock = Clock()
        claims, posts = Claims(), Posts(clock, seconds)
        s = Scheduler(per_destination=per_destination, total=total, claims=claims, attempt=posts.attempt,
                      record=posts.record, poll_interval=0.01, start_within=START_WITHIN, clock=clock)
        made.append((s, claims, posts, clock))
        return s, claims, posts, clock

    yield make
    for s, _, posts, _ in made:  # end whatever a test left running
        s.stopping = True
        for gate in posts.gates.values():
            gate.set()
        await asyncio.gather(*s.tasks)


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(20):
        await asyncio.sleep(0)


def run_fresh(s: Scheduler, *jobs: Job) -> None:
    """As intake does: slots taken for deliveries stored claimed, then started."""
    for j in jobs:
        s.take(j.dest)
        s.start(j)


async def test_room_is_capped_per_destination_and_per_replica(scheduler: Callable[..., Made]) -> None:
    s, _, posts, _ = scheduler(per_destination=2, total=3)
    assert s.room("a") == 2 and s.free() == 3
    run_fresh(s, job(1, "a"), job(2, "a"), job(3, "b"))
    assert s.room("a") == 0 and s.room("b") == 0 and s.room("c") == 0 and s.free() == 0
    await settle()
    posts.finish(1)
    await settle()
    assert s.room("a") == 1 and s.room("c") == 1 and posts.recorded == [1]
    posts.finish(2, 3)
    await settle()
    assert s.busy == 0 and s.in_flight == {}


async def test_spilled_destinations_are_refilled_in_turn_once_enough_slots_are_free(
    scheduler: Callable[..., Made],
) -> None:
    s, claims, posts, _ = scheduler(per_destination=4, total=4, seconds=1.0)
    run_fresh(s, *(job(i, "a") for i in range(1, 5)))
    s.spill("a")
    s.spill("b")
    claims.stored["a"].extend(job(i, "a") for i in range(10, 14))
    claims.stored["b"].extend(job(i, "b") for i in range(20, 24))
    await settle()
    posts.finish(1)
    await settle()
    # One free slot: b has nothing in flight, so it gets it rather than a
    # waiting for a batch of two (refill_batch = per_destination // 2).
    assert claims.claimed_for == [("b", 1)]
    posts.finish(2, 20)
    await settle()
    # Two slots free now: a has a batch's worth, and b (just served) waits its turn.
    assert claims.claimed_for[1] == ("a", 2)
    assert set(posts.started) >= {10, 11, 20}


async def test_a_claim_older_than_the_start_window_is_left_to_lapse(scheduler: Callable[..., Made]) -> None:
    s, _, posts, clock = scheduler(per_destination=2, total=2)
    clock.now = 100.0 + START_WITHIN + 0.1
    run_fresh(s, job(1, "a", claimed_at=100.0))
    await settle()
    # Not POSTed (its claim might end mid-POST and another replica POST it too),
    # not recorded (the claim lapses and a poller retries it), slot free again.
    assert posts.started == [] and posts.recorded == [] and s.busy == 0


async def test_a_fast_destination_has_deliveries_claimed_ahead_that_take_over_its_slots(
    scheduler: Callable[..., Made],
) -> None:
    s, claims, posts, clock = scheduler(per_destination=2, total=10, seconds=0.05)
    run_fresh(s, job(1, "fast"))
    await settle()
    posts.finish(1)  # answered in 50 ms: a fast destination
    await settle()
    run_fresh(s, job(2, "fast"), job(3, "fast"), job(50, "other"))
    s.spill("fast")
    claims.stored["fast"].extend(job(i, "fast", claimed_at=clock.now) for i in range(10, 14))
    await settle()
    posts.finish(50)
    await settle()
    # A slot freed elsewhere; "fast" has every slot busy: its concurrency is claimed ahead.
    assert claims.claimed_for == [("fast", 2)]
    assert len(s.ahead["fast"]) == 2 and 10 not in posts.started
    posts.finish(2)
    await settle()
    # The POST that ended handed its slot straight to a delivery claimed ahead.
    assert posts.started[-1] == 10 and s.in_flight == {"fast": 2}
    posts.finish(3, 10, 11, 12, 13)
    await settle()
    assert sorted(posts.recorded) == [1, 2, 3, 10, 11, 12, 13, 50] and s.busy == 0


async def test_a_slow_destination_gets_nothing_claimed_ahead(scheduler: Callable[..., Made]) -> None:
    s, claims, posts, _ = scheduler(per_destination=2, total=10, seconds=1.5)
    run_fresh(s, job(1, "slow"), job(2, "slow"))
    s.spill("slow")
    claims.stored["slow"].extend(job(i, "slow") for i in range(10, 14))
    await settle()
    posts.finish(1)
    await settle()
    assert claims.claimed_for == [("slow", 1)] and s.ahead == {}


async def test_the_poller_starts_what_fits_and_hands_back_the_rest(scheduler: Callable[..., Made]) -> None:
    s, claims, posts, _ = scheduler(per_destination=1, total=5)
    claims.due = [job(1, "a"), job(2, "a"), job(3, "b")]
    assert await s.poll_once() == 3
    await settle()
    assert sorted(posts.started) == [1, 3] and claims.released == [2]
    posts.finish(1, 3)
    await settle()


async def test_stopping_hands_back_what_was_claimed_ahead_and_waits_for_running_posts(
    scheduler: Callable[..., Made],
) -> None:
    s, claims, posts, _ = scheduler(per_destination=1, total=5)
    run_fresh(s, job(1, "a"))
    s.ahead["a"] = collections.deque([job(2, "a"), job(3, "a")])
    await settle()
    stopping = asyncio.create_task(s.stop(grace=5))
    await settle()
    assert sorted(claims.released) == [2, 3]
    posts.finish(1)
    await stopping
    assert posts.started == [1] and posts.recorded == [1]
