"""mailgate-sender: turns queued outbox rows into SMTP deliveries.

The wiring of the pieces, each in its own module:
* dispatcher.py - when to claim and how many, one delivery task per message;
* claims.py - claiming due and lapsed messages, renewing the claims held (heartbeat);
* delivery.py - one message from claim to recorded outcome;
* smtp_client.py / smtp_connection.py - the SMTP transaction;
* recorder.py - outcomes written in batches, events published after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgate_common import events, retention, topology
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_sender.claims import Claimer
from mailgate_sender.delivery import Deliverer
from mailgate_sender.dispatcher import Dispatcher
from mailgate_sender.queue_control import QueueControl
from mailgate_sender.recorder import Recorder

log = logging.getLogger("mailgate.sender")


class SenderService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.relay = EventRelay(self.db, self.bus)
        self.claimer = Claimer(self.db, settings.sender_claim_timeout)
        self.recorder = Recorder(self.db, self.relay)
        self.deliverer = Deliverer(settings, self.db, self.recorder, self.claimer)
        self.dispatcher = Dispatcher(settings, self.claimer, self.deliverer, QueueControl(self.db))
        self.dispatching: asyncio.Task[None] | None = None
        self.loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.SENDER, self.on_event, self.settings.bus_prefetch)
        self.loops = [
            asyncio.create_task(self.claimer.heartbeat()),
            asyncio.create_task(self.relay.run()),
            asyncio.create_task(retention.run_periodically(lambda: retention.prune_outbox(self.db, self.settings))),
        ]
        self.dispatching = asyncio.create_task(self.dispatcher.run())

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        if not isinstance(event, events.SubmissionQueued):
            return
        if event.send_at > events.utcnow():
            return  # scheduled: the poller finds it when due
        # Acked at once: the event only says "look now"; the row is the work.
        # One wake-up may stand for many messages.
        self.dispatcher.wake_up(event.traces())

    async def stop(self) -> None:
        await self.bus.stop_consuming(grace=self.settings.sender_stop_grace)
        # The dispatcher finishes its claim in hand (its messages are started),
        # then stops; deliveries under way finish and are recorded, their claims
        # renewed meanwhile.
        self.dispatcher.stop()
        if self.dispatching is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.dispatching, 10)
        await self.dispatcher.wind_down(grace=self.settings.sender_stop_grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.drain(), 5)
        await cancel_and_wait(self.loops)
        await self.deliverer.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("sender", settings, SenderService(settings))
