"""Batcher: concurrent writes grouped into one write each (pure logic)."""

from __future__ import annotations

import asyncio

import pytest

from mailgate_common.batching import Batcher


class Outage(Exception):
    pass


def test_items_arriving_during_a_write_form_the_next_batch() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    async def main() -> list[int]:
        batcher: Batcher[int, int] = Batcher("test", write, max_batch=3)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0)  # the writer takes item 0 alone
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert writes == [[0], [1, 2, 3], [4, 5]]


def test_a_bad_item_fails_alone() -> None:
    async def write(items: list[int]) -> list[int]:
        if 2 in items:
            raise ValueError("item 2 is bad")
        return items

    async def main() -> list[object]:
        batcher: Batcher[int, int] = Batcher("test", write, max_batch=10)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True))

    results = asyncio.run(main())
    assert results[:2] == [0, 1] and results[3] == 3
    assert isinstance(results[2], ValueError)


def test_an_outage_fails_every_caller_at_once_without_retrying_item_by_item() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        writes.append(items)
        raise Outage("database away")

    async def main() -> list[object]:
        batcher: Batcher[int, int] = Batcher("test", write, max_batch=10, unsplittable=(Outage,))
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, Outage) for r in results)
    assert writes == [[0, 1, 2, 3]]


@pytest.mark.parametrize("split", [True, False])
def test_cancelled_writer_cancels_its_callers(split: bool) -> None:
    async def write(items: list[int]) -> list[int]:
        await asyncio.sleep(10)
        return items

    async def main() -> bool:
        batcher: Batcher[int, int] = Batcher("test", write, max_batch=10, split_on_failure=split)
        caller = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        assert batcher.writer is not None
        batcher.writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        return caller.cancelled()

    assert asyncio.run(main())
