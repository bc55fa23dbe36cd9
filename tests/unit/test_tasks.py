"""cancel_and_wait: a cancellation that asyncio.wait_for swallows does not leave a
task running (an imap-sync watcher went on watching an account it had handed over,
and the lease scan waiting for it stopped for good)."""

from __future__ import annotations

import asyncio
import sys

from mailgate_common.tasks import cancel_and_wait


class CommandLoop:
    """Waits for one "command" after another the way aioimaplib does."""

    def __init__(self) -> None:
        self.replies: list[asyncio.Future[None]] = []
        self.completed = 0

    async def run(self) -> None:
        while True:
            reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.replies.append(reply)
            await asyncio.wait_for(reply, 30)
            self.completed += 1


async def started(commands: CommandLoop) -> asyncio.Task[None]:
    task = asyncio.create_task(commands.run())
    await asyncio.sleep(0)
    return task


def test_a_cancellation_lost_as_a_command_completes_is_repeated() -> None:
    async def scenario() -> None:
        commands = CommandLoop()
        task = await started(commands)
        # The reply and the cancellation arrive together.
        commands.replies[-1].set_result(None)
        pending = asyncio.ensure_future(cancel_and_wait([task]))
        await asyncio.sleep(0.05)
        if sys.version_info < (3, 12):
            # The first cancellation was lost: the loop went on to its next command.
            assert commands.completed == 1 and not task.done()
        assert await asyncio.wait_for(pending, 5) == set()
        assert task.cancelled()

    asyncio.run(scenario())


def test_tasks_that_end_when_cancelled_are_waited_for_without_delay() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tasks = [await started(CommandLoop()) for _ in range(3)]
        begun = loop.time()
        assert await cancel_and_wait(tasks) == set()
        assert all(t.cancelled() for t in tasks)
        assert loop.time() - begun < 0.5

    asyncio.run(scenario())


def test_a_task_that_refuses_to_end_is_returned_after_the_deadline() -> None:
    refusing = True

    async def stubborn() -> None:
        while refusing:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    async def scenario() -> None:
        nonlocal refusing
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], deadline=0.3) == {task}
        assert not task.done()
        refusing = False
        await asyncio.wait_for(task, 1)

    asyncio.run(scenario())
