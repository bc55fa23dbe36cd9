"""mailgate-webhooks: stores a delivery for every subscribed event, then POSTs it.

Events arrive from RabbitMQ and are acked once their deliveries are stored
(intake.py, many events per transaction); the scheduler runs attempts and
retries from the database (scheduler.py, claims.py), each attempt is a POST
(attempts.py, http.py) whose result is recorded in batches (recorder.py).  A
crash or a long outage of a subscriber loses nothing.
"""

from __future__ import annotations

import asyncio
import time

from opentelemetry import context as otel_context

from mailgate_common import events, topology
from mailgate_common.batching import Batcher
from mailgate_common.bus import Bus
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_webhooks import maintenance, queue_state
from mailgate_webhooks.attempts import Attempts
from mailgate_webhooks.claims import START_WITHIN, Claims, claim_hold
from mailgate_webhooks.http import WebhookClient
from mailgate_webhooks.inbound import InboundRenderer, api_base_url
from mailgate_webhooks.intake import DeliveriesNotStored, Intake, Received
from mailgate_webhooks.jobs import Job, TraceContexts
from mailgate_webhooks.recorder import AttemptRecorder
from mailgate_webhooks.scheduler import Scheduler
from mailgate_webhooks.targets import Targets

# Events per store transaction (the bus prefetch bounds it in practice).
STORE_BATCH = 256
# How long a stopping replica waits for the database to record its last results.
RECORD_GRACE = 5.0


class WebhooksService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.client = WebhookClient(settings)
        self.recorder = AttemptRecorder(settings, self.db)
        targets = Targets(Sealer.from_settings(settings.secret, settings.secret_previous))
        contexts = TraceContexts()
        hold = claim_hold(settings.webhook_timeout)
        self.scheduler = Scheduler(
            per_destination=settings.webhook_endpoint_concurrency,
            total=settings.webhook_concurrency,
            claims=Claims(self.db, targets, contexts, hold=hold,
                          per_destination=settings.webhook_endpoint_concurrency,
                          hold_back=self.recorder.waiting_out_outage, clock=time.monotonic),
            attempt=Attempts(settings, self.client).attempt,
            record=self.recorder.record,
            poll_interval=settings.webhook_poll_interval,
            start_within=START_WITHIN,
            clock=time.monotonic,
        )
        inbound = InboundRenderer(service_url=settings.service_url,
                                  api_url=api_base_url(settings.api_host, settings.api_port),
                                  inline_max=settings.inbound_inline_attachment_max)
        intake = Intake(self.db, targets, self.scheduler, contexts, hold=hold,
                        service_url=settings.service_url, clock=time.monotonic, inbound=inbound)
        # An outage fails every event of a batch alike: no point retrying them one by one.
        self.storer: Batcher[Received, list[Job]] = Batcher(
            "webhook store", intake.store_batch, max_batch=STORE_BATCH, unsplittable=(DeliveriesNotStored,))
        self.loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.consume(topology.WEBHOOKS, self.on_event, self.settings.bus_prefetch)
        self.loops = [asyncio.create_task(self.scheduler.poll_due()),
                      asyncio.create_task(maintenance.keep(self.settings, self.db)),
                      asyncio.create_task(queue_state.follow(
                          self.db, self.scheduler, self.settings.webhook_concurrency,
                          queue_state.read_interval(self.settings.webhook_poll_interval)))]

    async def ready(self) -> bool:
        return self.bus.connected and await self.db.ping()

    async def on_event(self, event: events.AnyEvent) -> None:
        # Returns (and the bus acks) once the event's deliveries are committed.
        for job in await self.storer.submit((event, otel_context.get_current())):
            # Claimed by the INSERT, slot already taken: POST at once.  If this
            # replica dies first, the claim lapses and a poller finds the row.
            self.scheduler.start(job)

    async def stop(self) -> None:
        await self.bus.stop_consuming(grace=10)
        await cancel_and_wait(self.loops)
        await self.scheduler.stop(grace=self.settings.webhook_timeout + 5)
        await self.recorder.stop(grace=RECORD_GRACE)
        await self.client.close()
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("webhooks", settings, WebhooksService(settings))
