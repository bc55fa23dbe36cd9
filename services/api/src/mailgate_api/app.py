"""The litestar application: routes by domain, one error shape, shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from mailgate_api import health
from mailgate_api.accounts.routes import AccountController
from mailgate_api.accounts.verify import VerifyController
from mailgate_api.auth import AuthPlugin
from mailgate_api.blocklists.routes import BlocklistController
from mailgate_api.body_budget import body_budget
from mailgate_api.changes.routes import ChangesController
from mailgate_api.deps import Resources
from mailgate_api.errors import EXCEPTION_HANDLERS
from mailgate_api.gateways.routes import GatewayController
from mailgate_api.inbound.routes import InboundMessageController, InboundRouteController
from mailgate_api.logs.routes import LogsController
from mailgate_api.mailbox.routes import MailboxController
from mailgate_api.outbox.routes import OutboxController
from mailgate_api.settings import routes as settings_routes
from mailgate_api.settings import values as settings_values
from mailgate_api.settings.routes import SettingsController
from mailgate_api.stats.routes import StatsController
from mailgate_api.submit.routes import submit
from mailgate_api.suppression.routes import SuppressionController
from mailgate_api.templates.routes import TemplateController
from mailgate_api.tracing import tracing_middleware
from mailgate_api.tracking.routes import TrackingController
from mailgate_api.unsubscribe.routes import UnsubscribeController
from mailgate_api.webhooks.routes import WebhookController
from mailgate_common import gc_tuning, malloc, service_settings
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


async def _apply_prepared(resources: Resources, prepared: dict[str, Any]) -> None:
    """MAILGATE_SETTINGS, written at every start (the environment wins over earlier API writes)."""
    if not prepared:
        return
    # The operator's own environment: its webhook URL is not vetted like a caller's.
    stored = await settings_routes.prepare(prepared, resources.settings, check_urls=False)
    async with resources.db.transaction() as session:
        await service_settings.write(session, stored)
    log.info("applied prepared settings from MAILGATE_SETTINGS: %s", ", ".join(sorted(stored)))


def create_app(settings: Settings) -> Litestar:
    try:
        prepared = settings_values.parse_prepared(settings.settings)
    except settings_values.PreparedSettingsError as exc:
        raise SystemExit(f"mailgate: configuration error: {exc}") from None
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
        await _apply_prepared(resources, prepared)
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
            VerifyController,
            ChangesController,
            GatewayController,
            LogsController,
            StatsController,
            MailboxController,
            submit,
            OutboxController,
            SettingsController,
            SuppressionController,
            TemplateController,
            BlocklistController,
            TrackingController,
            UnsubscribeController,
            WebhookController,
            InboundRouteController,
            InboundMessageController,
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
