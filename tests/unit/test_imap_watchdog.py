"""The replica's watchdog over its watchers (``watchdog.py``), on real asyncio tasks."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from mailgate_imap_sync.watchdog import Watchdog


@dataclass
class FakeWatcher:
    busy_since: float


def test_only_a_watcher_working_without_progress_for_too_long_is_hung() -> None:
    watchdog = Watchdog(stall_after=100, stop_deadline=1)
    watchers = [("idle", FakeWatcher(0.0)), ("working", FakeWatcher(950.0)), ("hung", FakeWatcher(850.0))]
    assert watchdog.hung(watchers, now=1000.0) == ["hung"]


async def test_a_hung_watcher_is_cancelled() -> None:
    watchdog = Watchdog(stall_after=100, stop_deadline=2)
    task = asyncio.create_task(asyncio.Event().wait())
    assert await watchdog.stop("acct", task)
    assert task.cancelled() and watchdog.healthy


async def test_a_watcher_that_will_not_end_makes_the_replica_unhealthy_until_it_ends() -> None:
    watchdog = Watchdog(stall_after=100, stop_deadline=0.3)
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    assert not await watchdog.stop("acct", task)
    assert not watchdog.healthy and watchdog.stuck == {"acct": task}
    release.set()
    await task
    await asyncio.sleep(0)
    assert watchdog.healthy
