"""Stopping tasks for good.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives as the
operation it waits for completes (python/cpython#86296, fixed in 3.12 by the
rewrite on ``asyncio.timeout``).  aioimaplib waits for every IMAP command that
way, so one ``task.cancel()`` can be lost: the task carries on as if nothing
happened, and whoever awaits it waits forever.  Cancelling again until the
task has ended makes the loss harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# A task still running this long after its cancellation is cancelled again.  Long
# enough for the usual cleanup (closing a connection) to finish undisturbed.
RECANCEL_AFTER = 1.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], deadline: float | None = None
) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again each
    ``RECANCEL_AFTER`` seconds one is still running.  With ``deadline`` (seconds),
    gives up then and returns the tasks still running; otherwise returns an
    empty set.  Their results and exceptions are left to their owners."""
    loop = asyncio.get_running_loop()
    give_up = None if deadline is None else loop.time() + deadline
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        wait = RECANCEL_AFTER if give_up is None else min(RECANCEL_AFTER, give_up - loop.time())
        if wait <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=wait)
    return pending
