"""Deciding what to deliver when: claims due messages in batches and starts a
delivery for each.

Up to ``sender_concurrency`` SMTP exchanges run at a time, plus a batch claimed
ahead and those waiting for their outcome's commit.  No more of an account's
messages are claimed than the account has connections free, so a
connection-limited account's backlog never takes other accounts' places.
The dispatcher looks for work when:
* a ``submission.queued`` event arrives - the wake-up call for a message due
  now, so it goes out within milliseconds of being queued;
* a delivery finishes and frees room while messages are waiting, or frees a
  connection of an account that had none free;
* every ``sender_poll_interval`` - scheduled messages, retries, anything whose
  event was lost, and claims whose sender died mid-send (taken over).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict

from mailgate_common.settings import Settings
from mailgate_sender.claims import Claim, Claimer
from mailgate_sender.delivery import Deliverer
from mailgate_sender.queue_control import QueueControl

log = logging.getLogger("mailgate.sender")

# Trace contexts of woken messages not yet claimed; bounded, as a message may be
# claimed by another replica and never by us.
MAX_TRACE_HINTS = 10_000
# Seconds a poll leaves a new message to its own wake-up event (see Claimer.claim).
SETTLE = 0.5


class Dispatcher:
    def __init__(self, settings: Settings, claimer: Claimer, deliverer: Deliverer,
                 queue: QueueControl | None = None) -> None:
        self.poll = settings.sender_poll_interval
        self.claimer = claimer
        self.deliverer = deliverer
        self.concurrency = settings.sender_concurrency
        # Under load, claim when half the slots' worth is free rather than one at
        # a time: fewer, larger claims (each costs a round trip and a commit).
        # Idle, a claim is immediate.
        self.batch_floor = max(1, self.concurrency // 2)
        # Claimed and not yet through SMTP: the exchanges under way plus one
        # batch claimed ahead, so a freed slot does not wait for a claim's round trip.
        self.unsent = 0
        self.unsent_by_account: Counter[str] = Counter()
        self.max_unsent = self.concurrency + self.batch_floor
        # All claimed messages in this process, including those past their
        # exchange waiting a few milliseconds for the batch commit: bounded, as
        # each of those is a message the server has and the database does not know yet.
        self.max_claimed = 2 * self.concurrency
        self.tasks: set[asyncio.Task[None]] = set()
        self.queue = queue  # the operator's pause and concurrency of the submit queue
        self.stopping = False
        self.wake = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.traces: OrderedDict[str, str] = OrderedDict()

    def wake_up(self, traces: dict[str, str]) -> None:
        """Messages are due now; ``traces`` are the trace contexts of those the event named."""
        if traces:
            self.traces.update(traces)
            while len(self.traces) > MAX_TRACE_HINTS:
                self.traces.popitem(last=False)
        self.wake.set()

    def stop(self) -> None:
        """The loop finishes its claim in hand (its messages are started), then returns."""
        self.stopping = True
        self.wake.set()
        self.slot_freed.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reclaim = 0.0
        woken = True  # at start, and after a wake-up or a freed slot: take all that is due
        while not self.stopping:
            free = min(self.max_claimed - len(self.tasks), self.max_unsent - self.unsent)
            floor = self.batch_floor
            if self.queue is not None:
                state = await self.queue.state()
                if state.paused:
                    await self._wait_for_wake_up(self.queue.refresh)
                    woken = True
                    continue
                if state.concurrency is not None:
                    free = min(free, state.concurrency - self.unsent)
                    floor = min(floor, state.concurrency)
            if free < floor:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                woken = True
                continue
            # Cleared before claiming: an event arriving during the claim wakes us again.
            self.wake.clear()
            reclaim = loop.time() >= next_reclaim
            if reclaim:
                next_reclaim = loop.time() + self.poll
            try:
                claimed = await self.claimer.claim(
                    free, reclaim=reclaim, settle=0.0 if woken else SETTLE,
                    connections=self.deliverer.connection_limits, active=self.unsent_by_account,
                )
            except Exception as exc:
                log.warning("claiming due messages failed: %r", exc)
                await asyncio.sleep(self.poll)
                continue
            claims = claimed.claims
            self.unsent += len(claims)
            for claim in claims:
                self.unsent_by_account[claim.account_id] += 1
                task = asyncio.create_task(self._deliver(claim))
                self.tasks.add(task)
                task.add_done_callback(self._finished)
            # Messages of accounts whose connections this claim filled may have kept
            # other accounts' messages out of it: claim again without waiting.
            woken = len(claims) == free or bool(claims and claimed.held_back)
            if not woken and not self.stopping:
                # Caught up with everything due: wait for a wake-up or the interval.
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll)
                    woken = True
                except TimeoutError:
                    pass

    async def _wait_for_wake_up(self, seconds: float) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass

    async def wind_down(self, grace: float) -> None:
        """Deliveries under way get ``grace`` seconds to finish.  Then those not yet
        sending a message are called off and handed back (no attempt spent, no
        takeover counted), and those still sending or waiting for the verdict end:
        a message cut short is aborted, one fully sent is recorded as unknown -
        never left to be taken over and sent again."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=grace)
        if not self.tasks:
            return
        for hold in self.claimer.held:
            hold.call_off()
        self.deliverer.pool.interrupt("the sender is stopping")
        await asyncio.wait(self.tasks, timeout=5)

    async def _hand_back(self, claim: Claim) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # called off by ``wind_down``; handing back is still to do
        try:
            await self.deliverer.hand_back(claim)
        except Exception as exc:
            log.warning("could not hand %s back (its claim lapses instead): %r", claim.queue_id, exc)

    def _connections_full(self, account_id: str) -> bool:
        limit = self.deliverer.connection_limits.get(account_id)
        return limit is not None and self.unsent_by_account[account_id] >= limit

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slot_freed.set()

    async def _deliver(self, claim: Claim) -> None:
        claim.hold.task = asyncio.current_task()
        over = False

        def handed_over() -> None:
            nonlocal over
            if not over:
                over = True
                full = self._connections_full(claim.account_id)
                self.unsent -= 1
                self.unsent_by_account[claim.account_id] -= 1
                if not self.unsent_by_account[claim.account_id]:
                    del self.unsent_by_account[claim.account_id]
                self.slot_freed.set()
                if full:
                    # The account has a connection free again, and maybe messages due.
                    self.wake.set()

        try:
            await self.deliverer.deliver(claim, lambda: self.traces.pop(claim.queue_id, None), handed_over)
        except asyncio.CancelledError:
            if not claim.hold.called_off:
                raise
            if claim.hold.lost:
                # The heartbeat found the claim lost before the message went out.
                log.warning("%s: claim lost before its message was sent; left to whoever holds it now",
                            claim.queue_id)
            else:
                await self._hand_back(claim)
        except Exception:
            # No longer renewed, the claim lapses and the message is taken over
            # later - counted, so one that keeps crashing ends failed.
            log.exception("delivery of %s crashed", claim.queue_id)
        finally:
            handed_over()
            self.claimer.release(claim)
