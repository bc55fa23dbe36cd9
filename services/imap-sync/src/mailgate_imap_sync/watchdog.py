"""Finding watchers that hang, and stopping them.

Every IMAP command and database call of a watcher has a deadline, so a
watcher that has made no progress for far longer than any one step may take,
while not in IDLE or backing off, is stuck somewhere no deadline reaches (a
bug, a library waiting for ever).  Left alone it would hold its account's
lease - renewed by the heartbeat, so no other replica takes over - and perhaps
a permit of the replica's ``opening`` semaphore, for ever.  The replica
cancels it and starts the account afresh; a task that does not even end when
cancelled is kept here, and the replica reports not-ready while any is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from mailgate_common.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Busy(Protocol):
    # monotonic time of the last progress while working, 0.0 while waiting (IDLE, backoff)
    busy_since: float


class Watchdog:
    def __init__(self, stall_after: float, stop_deadline: float) -> None:
        self.stall_after = stall_after
        self.stop_deadline = stop_deadline
        # Watchers that did not end when cancelled: account -> task.
        self.stuck: dict[str, asyncio.Task[Any]] = {}

    def hung(self, watchers: Iterable[tuple[str, Busy]], now: float | None = None) -> list[str]:
        """The accounts whose watcher has been working without progress for too long."""
        now = time.monotonic() if now is None else now
        return [account for account, watcher in watchers
                if watcher.busy_since and now - watcher.busy_since > self.stall_after]

    async def stop(self, account: str, task: asyncio.Task[Any]) -> bool:
        """Cancel a hung watcher; False (and remembered as stuck) if it would not end."""
        log.error("watcher of %s made no progress for over %.0f s outside IDLE: cancelling it",
                  account, self.stall_after)
        if not await cancel_and_wait([task], self.stop_deadline):
            return True
        log.critical("watcher of %s did not end when cancelled: this replica is not ready until it does",
                     account)
        self.stuck[account] = task
        task.add_done_callback(lambda _: self.stuck.pop(account, None) if self.stuck.get(account) is task else None)
        return False

    @property
    def healthy(self) -> bool:
        return not self.stuck
