"""mailgate-smtp-ingress: applications submit mail over SMTP into the same outbox as REST,
and (when MX_PORT is set) mail from the internet reaches inbound routes through the MX door.

Configuration (MAILGATE_*): SMTP_HOST/SMTP_PORT (127.0.0.1:2525), SMTP_AUTH,
SMTP_ALLOW_PLAINTEXT_AUTH, SMTP_TLS_CERT/SMTP_TLS_KEY, SMTP_PROXY_PROTOCOL,
SMTP_HOSTNAME, SMTP_AUTH_FAILURE_DELAY, SMTP_REUSE_PORT, MAX_MESSAGE_SIZE; the MX door:
MX_HOST/MX_PORT (off when 0), MX_HOSTNAME, MX_MAX_SIZE, MX_RATE_PER_IP, MX_RATE_PER_SENDER,
MX_SYNC_TIMEOUT, DNS_SERVERS, RSPAMD_URL (the certificate and PROXY setting are the
submission door's); health and metrics on HEALTH_PORT (9104).
"""

from __future__ import annotations

import asyncio
import logging

from mailgate_common import retention
from mailgate_common.bus import Bus
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.inbound.auth import Authenticator as InboundAuthenticator
from mailgate_common.inbound.auth import resolver_from_settings
from mailgate_common.inbound.routes import RouteCache
from mailgate_common.inbound.spam import SpamChecker
from mailgate_common.outbox import Outbox
from mailgate_common.runtime import run
from mailgate_common.settings import Settings, load_settings_or_exit
from mailgate_common.tasks import cancel_and_wait
from mailgate_smtp_ingress.auth import Authenticator
from mailgate_smtp_ingress.handler import IngressHandler, Policy
from mailgate_smtp_ingress.mx_handler import MxHandler, MxPolicy, MxSMTP
from mailgate_smtp_ingress.mx_sync import SyncCaller
from mailgate_smtp_ingress.rate_limits import RateLimit
from mailgate_smtp_ingress.server import Door, SmtpServer

log = logging.getLogger("mailgate.smtp_ingress")


def mx_door(settings: Settings) -> Door:
    hostname = settings.mx_hostname or settings.smtp_hostname
    return Door("mx", settings.mx_host, settings.mx_port, hostname, settings.mx_max_size, protocol=MxSMTP,
                reuse_port=settings.smtp_reuse_port)


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
        self.mx: SmtpServer | None = None
        self.mx_handler: MxHandler | None = None
        if settings.mx_port:
            self.mx_handler = self._mx_handler()
            self.mx = SmtpServer(settings, self.mx_handler, mx_door(settings), data_budget=self.smtp.data_budget)
        self.relay_task: asyncio.Task[None] | None = None
        self.retention_task: asyncio.Task[None] | None = None

    def _mx_handler(self) -> MxHandler:
        s = self.settings
        # The greeting's name is also the authserv-id of Authentication-Results and the
        # "by" of our Received field: resolved here once, like the submission door's.
        hostname = s.mx_hostname or s.smtp_hostname or "localhost"
        return MxHandler(
            MxPolicy.from_settings(s, hostname),
            RouteCache(self.db),
            InboundAuthenticator(resolver_from_settings(s), authserv_id=hostname),
            SpamChecker.from_settings(s),
            SyncCaller(self.db, Sealer.from_settings(s.secret, s.secret_previous), timeout=s.mx_sync_timeout,
                       allow_private=s.webhooks_allow_private),
            self.relay, self.db,
            per_ip=RateLimit(s.mx_rate_per_ip), per_sender=RateLimit(s.mx_rate_per_sender),
        )

    async def start(self) -> None:
        await self.bus.connect()
        self.relay_task = asyncio.create_task(self.relay.run())
        await self.smtp.start()
        s = self.settings
        log.info("SMTP on %s:%s (auth %s, STARTTLS %s, PROXY protocol %s)", s.smtp_host,
                 s.smtp_port, "required" if s.smtp_auth else "optional",
                 "on" if self.smtp.tls else "off", "on" if s.smtp_proxy_protocol else "off")
        if self.mx is not None:
            await self.mx.start()
            # Received messages follow the retention settings (held ones stay until deleted).
            self.retention_task = asyncio.create_task(
                retention.run_periodically(lambda: retention.prune_inbound(self.db, self.settings)))
            log.info("MX door on %s:%s as %s (STARTTLS %s, PROXY protocol %s, %s/min per IP, %s/min per sender)",
                     s.mx_host, s.mx_port, self.mx.door.hostname, "on" if self.mx.tls else "off",
                     "on" if s.smtp_proxy_protocol else "off", s.mx_rate_per_ip or "unlimited",
                     s.mx_rate_per_sender or "unlimited")

    async def ready(self) -> bool:
        doors = self.smtp.serving() and (self.mx is None or self.mx.serving())
        return doors and self.bus.connected and await self.db.ping()

    async def stop(self) -> None:
        await self.smtp.stop()
        if self.mx is not None and self.mx_handler is not None:
            await self.mx.stop()
            await self.mx_handler.stop()
        await cancel_and_wait([t for t in (self.relay_task, self.retention_task) if t is not None])
        await self.bus.close()
        await self.db.dispose()


def main() -> None:
    settings = load_settings_or_exit()
    run("smtp-ingress", settings, SmtpIngressService(settings))
