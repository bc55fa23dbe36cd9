"""Group concurrent writes into one transaction each.

Callers ``await submit(item)``; one writer task takes every item waiting,
writes them together and answers each caller once that write committed.
Items arriving during a write form the next batch, so batches grow with load
and an idle service adds no delay: one commit (and, when durable, one WAL
flush) serves many events or attempts instead of one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from prometheus_client import Histogram

log = logging.getLogger(__name__)

# How much each transaction carries: a batch of one under load means the writes
# are not being shared, which is where per-transaction costs show.
BATCH_SIZE = Histogram("mailgate_batch_size", "Items written per batch", ["batcher"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, name: str, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int,
                 *, split_on_failure: bool = True,
                 unsplittable: tuple[type[BaseException], ...] = ()) -> None:
        self.name = name
        self.write = write
        self._sizes = BATCH_SIZE.labels(name)
        self.max_batch = max_batch
        # Retry a failed batch item by item, so one bad item cannot fail the others
        # (off where failures are outages, which ``write`` already retries).
        self.split_on_failure = split_on_failure
        # Failures that would fail each item alike (the database is away): answer
        # every caller at once instead of retrying item by item.
        self.unsplittable = unsplittable
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self.writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch:]
            self._sizes.observe(len(batch))
            await self._write(batch)

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1 or not self.split_on_failure or isinstance(exc, self.unsplittable):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            # One bad item must not fail the others: write them one by one.
            log.warning("%s batch of %d failed (%r); writing one by one", self.name, len(batch), exc)
            for one in batch:
                await self._write([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for the writer to finish everything submitted so far."""
        while self.writer is not None and not self.writer.done():
            await asyncio.shield(self.writer)
