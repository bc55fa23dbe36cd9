"""mailgate-smtp-ingress: applications submit mail over SMTP into the same outbox as REST.

Configuration (MAILGATE_*): SMTP_HOST/SMTP_PORT (127.0.0.1:2525), SMTP_AUTH,
SMTP_ALLOW_PLAINTEXT_AUTH, SMTP_TLS_CERT/SMTP_TLS_KEY, SMTP_PROXY_PROTOCOL,
SMTP_HOSTNAME, SMTP_AUTH_FAILURE_DELAY, SMTP_REUSE_PORT, MAX_MESSAGE_SIZE; health and metrics on
HEALTH_PORT (9104).
"""

from __future__ import annotations

import asyncio
import logging

from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.outbox import Outbox
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_smtp_ingress.auth import Authenticator
from mailgate_smtp_ingress.handler import IngressHandler, Policy
from mailgate_smtp_ingress.server import SmtpServer

log = logging.getLogger("mailgate.smtp_ingress")


class SmtpIngressService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        self.bus = Bus.from_settings(settings)
        self.relay = EventRelay(self.db, self.bus)
        handler = IngressHandler(
            Policy.from_settings(settings), self.db, Outbox(self.db, self.relay),
            Authenticator(self.db, settings.admin_token),
        )
        self.smtp = SmtpServer(settings, handler)
        self.relay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.bus.connect()
        self.relay_task = asyncio.create_task(self.relay.run())
        await self.smtp.start()
        s = self.settings
        log.info("SMTP on %s:%s (auth %s, STARTTLS %s, PROXY protocol %s)", s.smtp_host,
                 s.smtp_port, "required" if s.smtp_auth else "optional",
                 "on" if self.smtp.tls else "off", "on" if s.smtp_proxy_protocol else "off")

    async def ready(self) -> bool:
        return self.smtp.serving() and self.bus.connected and await self.db.ping()

    async def stop(self) -> None:
        await self.smtp.stop()
        if self.relay_task is not None:
            await cancel_and_wait([self.relay_task])
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("smtp-ingress", settings, SmtpIngressService(settings))
