"""The budget of bodies in memory (and of an account's connections): pure logic."""

from __future__ import annotations

import asyncio

import pytest

from mailgate_common.budget import Budget


async def _hold(budget: Budget, amount: int, order: list[str], name: str, release: asyncio.Event) -> None:
    async with budget.reserve(amount):
        order.append(name)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_bodies_wait_until_the_budget_has_room_first_come_first_served() -> None:
    budget = Budget(100)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abcd"}
    tasks = [asyncio.create_task(_hold(budget, amount, order, name, releases[name]))
             for name, amount in (("a", 60), ("b", 50), ("c", 10), ("d", 30))]
    await _settle()
    # b does not fit; c and d would, but do not overtake it.
    assert order == ["a"] and budget.used == 60
    releases["a"].set()
    await _settle()
    assert order == ["a", "b", "c", "d"] and budget.used == 90
    for release in releases.values():
        release.set()
    await asyncio.gather(*tasks)
    assert budget.used == 0


async def test_a_body_larger_than_the_whole_budget_goes_alone() -> None:
    budget = Budget(100)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abc"}
    tasks = [asyncio.create_task(_hold(budget, amount, order, name, releases[name]))
             for name, amount in (("a", 10), ("b", 500), ("c", 10))]
    await _settle()
    assert order == ["a"]
    releases["a"].set()
    await _settle()
    assert order == ["a", "b"] and budget.used == 500
    releases["b"].set()
    await _settle()
    assert order == ["a", "b", "c"]
    releases["c"].set()
    await asyncio.gather(*tasks)
    assert budget.used == 0


async def test_a_waiter_cancelled_gives_its_place_to_the_next() -> None:
    budget = Budget(100)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "abc"}
    a = asyncio.create_task(_hold(budget, 90, order, "a", releases["a"]))
    b = asyncio.create_task(_hold(budget, 50, order, "b", releases["b"]))
    c = asyncio.create_task(_hold(budget, 10, order, "c", releases["c"]))
    await _settle()
    assert order == ["a"]
    b.cancel()
    await _settle()
    assert order == ["a", "c"] and budget.used == 100
    releases["a"].set()
    releases["c"].set()
    await asyncio.gather(a, c)
    assert budget.used == 0


async def test_a_raised_limit_lets_waiters_in_at_once() -> None:
    connections = Budget(1)
    order: list[str] = []
    releases = {name: asyncio.Event() for name in "ab"}
    tasks = [asyncio.create_task(_hold(connections, 1, order, name, releases[name])) for name in "ab"]
    await _settle()
    assert order == ["a"]
    connections.resize(2)  # the account's connection limit was raised
    await _settle()
    assert order == ["a", "b"]
    for release in releases.values():
        release.set()
    await asyncio.gather(*tasks)


async def test_a_reservation_gives_up_after_its_wait_and_holds_nothing() -> None:
    budget = Budget(10)
    async with budget.reserve(10):
        with pytest.raises(TimeoutError):
            async with budget.reserve(5, wait=0.01):
                pass
    assert budget.used == 0
