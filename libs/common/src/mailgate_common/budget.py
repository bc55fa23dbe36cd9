"""A budget of something held at once: bytes of message data in memory, an
account's SMTP connections.

A burst of large messages must queue, not exhaust memory (a pod's limit is a
few hundred MB; a message may be 25 MB, and each door makes copies of it).
Every holder asks for its amount before loading or receiving a body and gives
it back when done.  First come, first served: a large request is never
overtaken forever by smaller ones.  A single request larger than the whole
limit goes alone (once nothing else is held), so nothing is refused for being
big.  The limit may change while amounts are held (an account's new
connection limit): it applies as they are given back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, amount: int) -> bool:
        return self.used == 0 or self.used + amount <= self.limit

    async def acquire(self, amount: int) -> None:
        """Wait until ``amount`` can be held; give it back with :meth:`release`."""
        if amount <= 0:
            return
        if not self._waiting and self._fits(amount):
            self.used += amount
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiting.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(amount)  # granted as we were cancelled: give it back
            else:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                self._grant()  # we may have been the one holding up the line
            raise

    def release(self, amount: int) -> None:
        if amount <= 0:
            return
        self.used -= amount
        self._grant()

    @asynccontextmanager
    async def reserve(self, amount: int, wait: float | None = None) -> AsyncIterator[None]:
        """Hold ``amount`` for the block; TimeoutError if not granted within ``wait`` seconds."""
        if wait is None:
            await self.acquire(amount)
        else:
            async with asyncio.timeout(wait):
                await self.acquire(amount)
        try:
            yield
        finally:
            self.release(amount)

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            amount, future = self._waiting.popleft()
            if not future.done():  # else cancelled, its task not yet told
                self.used += amount
                future.set_result(None)
