"""AckRuns: deliveries handled together are acked with one multiple ack, and a
multiple ack never covers a delivery that is still being handled."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from mailgate_common.acks import AckRuns


class Delivery:
    """Stands in for aio-pika's IncomingMessage: records the frames it would send."""

    def __init__(self, tag: int, frames: list[tuple[int, bool]]) -> None:
        self.delivery_tag = tag
        self.frames = frames

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0.01)  # a write yields, as aiormq's does
        self.frames.append((self.delivery_tag, multiple))


def incoming(tag: int, frames: list[tuple[int, bool]]) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, Delivery(tag, frames))


def covered(frames: list[tuple[int, bool]], open_before: set[int]) -> list[int]:
    """Every tag the frames acknowledge (a multiple ack: all tags up to it not acked before)."""
    acked: list[int] = []
    for tag, multiple in frames:
        if multiple:
            acked += sorted(t for t in open_before if t <= tag and t not in acked)
        else:
            acked.append(tag)
    return acked


def run(scenario: Any) -> Any:
    return asyncio.run(scenario())


def test_deliveries_handled_together_take_one_multiple_ack() -> None:
    async def scenario() -> list[tuple[int, bool]]:
        frames: list[tuple[int, bool]] = []
        runs = AckRuns()
        deliveries = [incoming(tag, frames) for tag in (1, 2, 3, 4)]
        for d in deliveries:
            runs.received(d)
        await asyncio.gather(*(runs.ack(d) for d in deliveries))
        return frames

    assert run(scenario) == [(4, True)]


def test_a_delivery_still_being_handled_is_never_covered() -> None:
    async def scenario() -> tuple[list[tuple[int, bool]], list[tuple[int, bool]]]:
        frames: list[tuple[int, bool]] = []
        runs = AckRuns()
        deliveries = {tag: incoming(tag, frames) for tag in (1, 2, 3, 4, 5)}
        for d in deliveries.values():
            runs.received(d)
        # 3 is still being handled while 1, 2, 4 and 5 finish.
        await asyncio.gather(*(runs.ack(deliveries[t]) for t in (1, 2, 4, 5)))
        first = list(frames)
        await runs.ack(deliveries[3])
        return first, frames

    first, frames = run(scenario)
    assert 3 not in covered(first, {1, 2, 3, 4, 5})
    assert first == [(2, True), (4, False), (5, False)]
    assert sorted(covered(frames, {1, 2, 3, 4, 5})) == [1, 2, 3, 4, 5]


def test_a_delivery_settled_on_its_own_does_not_hold_back_a_run() -> None:
    async def scenario() -> list[tuple[int, bool]]:
        frames: list[tuple[int, bool]] = []
        runs = AckRuns()
        deliveries = [incoming(tag, frames) for tag in (1, 2, 3)]
        for d in deliveries:
            runs.received(d)
        runs.settled(deliveries[0])  # retried: acked on its own
        await asyncio.gather(*(runs.ack(d) for d in deliveries[1:]))
        return frames

    assert run(scenario) == [(3, True)]


def test_a_cancelled_waiter_is_acked_once_and_not_covered_again() -> None:
    async def scenario() -> list[tuple[int, bool]]:
        frames: list[tuple[int, bool]] = []
        runs = AckRuns()
        one, two, three, four = (incoming(tag, frames) for tag in (1, 2, 3, 4))
        for d in (one, two, three, four):
            runs.received(d)
        runs.settled(one)  # retried: acked on its own
        waiting = asyncio.ensure_future(runs.ack(two))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # two's write is under way
        waiting.cancel()  # the handler is cancelled while its ack is being written
        runs.settled(two)  # what Bus does as the handler ends
        await asyncio.gather(runs.ack(three), runs.ack(four))
        await asyncio.sleep(0.05)
        return frames

    frames = run(scenario)
    acked = covered(frames, {2, 3, 4})
    assert sorted(acked) == [2, 3, 4] and len(acked) == 3, frames
