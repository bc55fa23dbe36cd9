"""The litestar application: routes by domain, one error shape, shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from mailgate_api import health
from mailgate_api.accounts.routes import AccountController
from mailgate_api.auth import AuthPlugin
from mailgate_api.body_budget import body_budget
from mailgate_api.deps import Resources
from mailgate_api.errors import EXCEPTION_HANDLERS
from mailgate_api.mailbox.routes import MailboxController
from mailgate_api.outbox.routes import OutboxController
from mailgate_api.settings.routes import SettingsController
from mailgate_api.submit.routes import submit
from mailgate_api.suppression.routes import SuppressionController
from mailgate_api.tracing import tracing_middleware
from mailgate_api.webhooks.routes import WebhookController
from mailgate_common import gc_tuning, malloc
from mailgate_common.budget import Budget
from mailgate_common.bus import Bus
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.outbox import Outbox
from mailgate_common.settings import Settings
from mailgate_common.tasks import cancel_and_wait

log = logging.getLogger("mailgate.api")


async def _connect_bus(bus: Bus) -> None:
    # The API keeps accepting mail while the broker is away: rows are committed
    # and the event relay publishes them once the broker is back.
    while True:
        try:
            await bus.connect()
            return
        except Exception as exc:
            log.warning("broker unreachable, retrying: %r", exc)
            await asyncio.sleep(2)


def create_app(settings: Settings) -> Litestar:
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    bus = Bus.from_settings(settings)
    relay = EventRelay(db, bus)
    resources = Resources(
        settings=settings,
        db=db,
        bus=bus,
        relay=relay,
        outbox=Outbox(db, relay),
        sealer=Sealer.from_settings(settings.secret, settings.secret_previous),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        connecting = asyncio.create_task(_connect_bus(resources.bus))
        relaying = asyncio.create_task(relay.run())
        malloc.trim()
        gc_tuning.tune_after_start()
        try:
            yield
        finally:
            # The relay sends its last wake-ups as it ends, before the bus closes.
            await cancel_and_wait([connecting, relaying])
            await resources.bus.close()
            await resources.db.dispose()

    def provide_resources() -> Resources:
        return resources

    max_body = int(settings.max_message_size * 1.4) + 65536  # base64 and JSON around the largest message

    return Litestar(
        route_handlers=[
            AccountController,
            MailboxController,
            submit,
            OutboxController,
            SettingsController,
            SuppressionController,
            WebhookController,
            health.ready,
            health.live,
            health.metrics,
        ],
        dependencies={"res": Provide(provide_resources, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[body_budget(Budget(settings.api_body_budget), max_body), tracing_middleware],
        plugins=[AuthPlugin(resources)],
        lifespan=[lifespan],
        request_max_body_size=max_body,
        openapi_config=OpenAPIConfig(
            title="mailgate API",
            version="0.1.0",
            description="Self-hosted transactional email, EmailEngine-compatible.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), ScalarRenderPlugin(path="/scalar")],
        ),
    )
