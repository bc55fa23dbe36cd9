"""mailgate-sender: turns queued outbox rows into SMTP deliveries.

One dispatcher claims due messages in batches (one statement for many) and
starts a delivery for each: up to ``sender_concurrency`` SMTP exchanges at a
time, plus a batch claimed ahead and those waiting for their outcome's commit.
It claims no more of an account's messages than the account has connections
free, so a connection-limited account's backlog never takes other accounts' places.
It looks for work when:
* a ``submission.queued`` event arrives - the wake-up call for a message due
  now, so it goes out within milliseconds of being queued;
* a delivery finishes and frees room while messages are waiting, or frees a
  connection of an account that had none free;
* every ``sender_poll_interval`` - scheduled messages, retries, anything whose
  event was lost, and claims whose sender died mid-send.
Outcomes are written in batches by the recorder (see recorder.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict

from mailgate_common import events, retention, topology
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_sender.claims import Claim, Claimer
from mailgate_sender.delivery import Deliverer
from mailgate_sender.recorder import Recorder

log = logging.getLogger("mailgate.sender")

# Trace contexts of woken messages not yet claimed; bounded, as a message may be
# claimed by another replica and never by us.
MAX_TRACE_HINTS = 10_000
# Seconds a poll leaves a new message to its own wake-up event (see Claimer.claim).
SETTLE = 0.5


class SenderService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.relay = EventRelay(self.db, self.bus)
        self.claimer = Claimer(self.db, settings.sender_claim_timeout)
        self.recorder = Recorder(self.db, self.relay, retry_for=settings.sender_claim_timeout * 0.8)
        self.deliverer = Deliverer(settings, self.db, self.recorder)
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
        self.dispatcher: asyncio.Task[None] | None = None
        self.loops: list[asyncio.Task[None]] = []
        self.stopping = False
        self.wake = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.traces: OrderedDict[str, str] = OrderedDict()

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.SENDER, self.on_event, self.settings.bus_prefetch)
        self.dispatcher = asyncio.create_task(self.dispatch())
        self.loops = [
            asyncio.create_task(self.relay.run()),
            asyncio.create_task(retention.run_periodically(lambda: retention.prune_outbox(self.db, self.settings))),
        ]

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        if not isinstance(event, events.SubmissionQueued):
            return
        if event.send_at > events.utcnow():
            return  # scheduled: the poller finds it when due
        traces = event.traces()  # one wake-up may stand for many messages
        if traces:
            self.traces.update(traces)
            while len(self.traces) > MAX_TRACE_HINTS:
                self.traces.popitem(last=False)
        # Acked at once: the event only says "look now"; the row is the work.
        self.wake.set()

    async def dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        poll = self.settings.sender_poll_interval
        next_reclaim = 0.0
        woken = True  # at start, and after a wake-up or a freed slot: take all that is due
        while not self.stopping:
            free = min(self.max_claimed - len(self.tasks), self.max_unsent - self.unsent)
            if free < self.batch_floor:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                woken = True
                continue
            # Cleared before claiming: an event arriving during the claim wakes us again.
            self.wake.clear()
            reclaim = loop.time() >= next_reclaim
            if reclaim:
                next_reclaim = loop.time() + poll
            try:
                claimed = await self.claimer.claim(
                    free, reclaim=reclaim, settle=0.0 if woken else SETTLE,
                    connections=self.deliverer.connection_limits, active=self.unsent_by_account,
                )
            except Exception as exc:
                log.warning("claiming due messages failed: %r", exc)
                await asyncio.sleep(poll)
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
                    await asyncio.wait_for(self.wake.wait(), poll)
                    woken = True
                except TimeoutError:
                    pass

    def _connections_full(self, account_id: str) -> bool:
        limit = self.deliverer.connection_limits.get(account_id)
        return limit is not None and self.unsent_by_account[account_id] >= limit

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slot_freed.set()

    async def _deliver(self, claim: Claim) -> None:
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
        except Exception:
            # The claim lapses and the poller retries the message later.
            log.exception("delivery of %s crashed", claim.queue_id)
        finally:
            handed_over()

    async def stop(self) -> None:
        self.stopping = True
        await self.bus.stop_consuming(grace=20)
        # The dispatcher finishes its claim in hand (its messages are started),
        # then stops; deliveries under way finish and are recorded.
        self.wake.set()
        self.slot_freed.set()
        if self.dispatcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.dispatcher, 10)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=20)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.drain(), 5)
        await cancel_and_wait(self.loops)
        await self.deliverer.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("sender", settings, SenderService(settings))
