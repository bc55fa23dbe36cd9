"""mailgate-sender: turns queued outbox rows into SMTP deliveries.

Two ways work arrives, both ending in ``Deliverer.deliver``:
* ``submission.queued`` events - the fast path for messages due now;
* the due-work poller - scheduled messages, retries, and anything whose
  event was lost or whose sender died mid-send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgate_common import events, topology
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_sender.delivery import Claim, Deliverer

log = logging.getLogger("mailgate.sender")


class SenderService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus(settings.amqp_url)
        self.relay = EventRelay(self.db, self.bus)
        self.deliverer = Deliverer(settings, self.db, self.relay)
        self.slots = asyncio.Semaphore(settings.sender_concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.loops: list[asyncio.Task[None]] = []
        self.stopping = False
        self.busy = 0
        self.slot_freed = asyncio.Event()

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.SENDER, self.on_event, self.settings.bus_prefetch)
        self.loops = [
            asyncio.create_task(self.poll_due()),
            asyncio.create_task(self.relay.run()),
        ]

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        if not isinstance(event, events.SubmissionQueued):
            return
        if event.send_at > events.utcnow():
            return  # scheduled: the poller sends it when due
        async with self.slots:
            self.busy += 1
            try:
                claim = await self.deliverer.claim(event.queue_id)
                if claim is not None:
                    await self.deliverer.deliver(claim)
            finally:
                self.busy -= 1

    async def poll_due(self) -> None:
        while not self.stopping:
            free = self.settings.sender_concurrency - self.busy
            if free <= 0:
                # Busy: wait for a delivery to finish rather than a poll interval.
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                # Claim only what can start now; claimed rows wait for nobody.
                claims = await self.deliverer.claim_due(free)
                for claim in claims:
                    await self.slots.acquire()
                    self.busy += 1
                    task = asyncio.create_task(self._deliver(claim))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("due-work poll failed: %r", exc)
                claims = []
            if len(claims) < free:
                # Caught up with everything due: look again after the interval.
                await asyncio.sleep(self.settings.sender_poll_interval)

    async def _deliver(self, claim: Claim) -> None:
        try:
            await self.deliverer.deliver(claim)
        except Exception:
            # The claim lapses and the poller retries the message later.
            log.exception("delivery of %s crashed", claim.queue_id)
        finally:
            self.busy -= 1
            self.slots.release()
            self.slot_freed.set()

    async def stop(self) -> None:
        self.stopping = True
        await self.bus.stop_consuming(grace=20)
        for loop in self.loops:
            loop.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=20)
        for loop in self.loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await self.deliverer.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("sender", settings, SenderService(settings))
