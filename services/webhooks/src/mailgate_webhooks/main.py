"""mailgate-webhooks: stores a delivery for every subscribed event, then POSTs it.

Events arrive from RabbitMQ and are acked once their deliveries are stored;
attempts and retries run from the database, so a crash or a long outage of a
subscriber loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgate_common import events, topology
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_webhooks import maintenance
from mailgate_webhooks.dispatch import Claim, Dispatcher

log = logging.getLogger("mailgate.webhooks")


class WebhooksService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus(settings.amqp_url)
        self.dispatcher = Dispatcher(settings, self.db)
        self.active = 0
        self.slot_freed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.poller: asyncio.Task[None] | None = None
        self.upkeep: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.WEBHOOKS, self.on_event, self.settings.bus_prefetch)
        self.poller = asyncio.create_task(self.poll_due())
        self.upkeep = asyncio.create_task(self.keep_log())

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        for delivery_id in await self.dispatcher.store(event):
            # Try at once; if this replica dies first, the poller finds the row.
            self._spawn_claimed(delivery_id)

    def _spawn_claimed(self, delivery_id: int) -> None:
        async def go() -> None:
            claim = await self.dispatcher.claim(delivery_id)
            if claim is not None:
                await self.dispatcher.attempt(claim)

        self._spawn(go())

    def _spawn(self, coro: object) -> None:
        self.active += 1
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.active -= 1
            self.slot_freed.set()
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("webhook attempt crashed: %r", t.exception())

        task.add_done_callback(done)

    async def poll_due(self) -> None:
        while not self.stopping:
            claims: list[Claim] = []
            free = self.settings.webhook_concurrency - self.active
            if free <= 0:
                # Busy: wait for an attempt to finish rather than a poll interval.
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                claims = await self.dispatcher.claim_due(free)
                for claim in claims:
                    self._spawn(self.dispatcher.attempt(claim))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook poll failed: %r", exc)
            if len(claims) < free:
                await asyncio.sleep(self.settings.webhook_poll_interval)

    async def keep_log(self) -> None:
        """Expire spent retries and prune old deliveries (retention), periodically."""
        while not self.stopping:
            try:
                await maintenance.run_once(self.settings, self.db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook log upkeep failed: %r", exc)
            await asyncio.sleep(maintenance.INTERVAL)

    async def stop(self) -> None:
        self.stopping = True
        await self.bus.stop_consuming(grace=10)
        for task in (self.poller, self.upkeep):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.webhook_timeout + 5)
        await self.dispatcher.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("webhooks", settings, WebhooksService(settings))
