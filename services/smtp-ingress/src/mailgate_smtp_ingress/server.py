"""aiosmtpd's SMTP protocol, served on the running event loop (no extra thread).

Memory is bounded whatever clients do: at most ``smtp_max_connections``
sessions (more are answered 421 and closed), and message data is received
only within ``smtp_data_budget`` bytes across sessions - aiosmtpd holds a
whole message in memory while it arrives, so DATA first reserves the size the
client declared (SIZE=, RFC 1870) or the size limit, and waits for room.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr, Protocol, cast

from aiosmtpd.smtp import SMTP

from mailgate_common.budget import Budget
from mailgate_common.settings import Settings
from mailgate_smtp_ingress import replies
from mailgate_smtp_ingress.replies import rewrite

# aiosmtpd logs every command line at INFO on "mail.log", AUTH payloads
# (base64 credentials) included: keep it to warnings and above.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class _LegacyLoginDataNoise(logging.Filter):
    """aiosmtpd 1.4 warns on every successful AUTH that a field it sets itself is deprecated."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_LegacyLoginDataNoise())

IDENT = "mailgate ESMTP"
# "<dot-atom@hostname>" and what follows it (the MAIL/RCPT parameters).
_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>\s*(.*)", re.DOTALL)
IDLE_TIMEOUT = 300.0  # RFC 5321 4.5.3.2.7: at least 5 minutes
PROXY_TIMEOUT = 10.0
# How long DATA waits for room in the data budget before answering 451.
DATA_WAIT = 30.0
_SIZE_OPTION = re.compile(r"SIZE=(\d+)", re.IGNORECASE)


def size_option(mail_options: list[str]) -> int | None:
    """The SIZE= a client gave with MAIL FROM (RFC 1870), None when it gave none."""
    for option in mail_options:
        found = _SIZE_OPTION.fullmatch(option)
        if found:
            return int(found.group(1))
    return None


def declared_size(mail_options: list[str], limit: int) -> int:
    """The SIZE= a client gave with MAIL FROM (capped at the limit), else the limit."""
    declared = size_option(mail_options)
    return limit if declared is None else min(declared, limit)


class IngressSMTP(SMTP):
    """aiosmtpd's protocol with our wording on the replies it composes itself, and
    its message data held within the process's data budget."""

    def __init__(self, *args: Any, data_budget: Budget, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_budget = data_budget
        self._on_close: Callable[[], None] | None = on_close

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        size = declared_size(self.envelope.mail_options, self.data_size_limit or 0)
        try:
            await asyncio.wait_for(self.data_budget.acquire(size), DATA_WAIT)
        except TimeoutError:
            await self.push(replies.BUSY)
            return
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_budget.release(size)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # Nearly every client sends "<local@domain>": parse that directly.  aiosmtpd's
        # general path (the email package's header parser, plus a class it defines
        # on every call) was a fifth of the service's CPU per message.  The handler
        # validates whatever comes out either way.
        simple = _SIMPLE_PATH.fullmatch(arg)
        if simple is not None:
            return simple.group(1), simple.group(2)
        # aiosmtpd only expects HeaderParseError, but the email parser raises
        # others on input like "MAIL FROM:<" (found by the fuzz test).
        try:
            return super()._getaddr(arg)
        except Exception:
            return None, None  # -> "501 5.1.3 Bad address syntax"

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(rewrite(status))
        else:
            await super().push(status)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.smtp_tls_cert and settings.smtp_tls_key):
        return None
    # Purpose.CLIENT_AUTH: a server context that does not ask clients for certificates.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(
            "mailgate-smtp-ingress: cannot load MAILGATE_SMTP_TLS_CERT/MAILGATE_SMTP_TLS_KEY "
            f"({settings.smtp_tls_cert}, {settings.smtp_tls_key}): {exc}"
        ) from None
    return context


class Handler(Protocol):
    async def drain(self, grace: float) -> None: ...


@dataclass(frozen=True)
class Door:
    """One listening port of the service: the submission door, or the MX door."""

    name: str
    host: str
    port: int
    hostname: str | None  # the greeting's name; None: this machine's FQDN
    max_message_size: int
    protocol: type[IngressSMTP] = IngressSMTP
    reuse_port: bool = False

    @classmethod
    def submission(cls, settings: Settings) -> Door:
        return cls("submission", settings.smtp_host, settings.smtp_port, settings.smtp_hostname,
                   settings.max_message_size, reuse_port=settings.smtp_reuse_port)


class SmtpServer:
    """A door's listener.  Both doors share the certificate, the PROXY protocol setting and,
    when given one, the data budget (memory is the process's, whichever door it arrives at)."""

    def __init__(self, settings: Settings, handler: Handler, door: Door | None = None,
                 data_budget: Budget | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.door = door or Door.submission(settings)
        self.tls = tls_context(settings)
        self.server: asyncio.Server | None = None
        self.connections: weakref.WeakSet[IngressSMTP] = weakref.WeakSet()
        self.open_connections = 0
        self.data_budget = data_budget or Budget(settings.smtp_data_budget)

    def _closed(self) -> None:
        self.open_connections -= 1

    def _protocol(self, hostname: str) -> asyncio.Protocol:
        s = self.settings
        if self.open_connections >= s.smtp_max_connections:
            return _TooMany()
        self.open_connections += 1
        protocol = self.door.protocol(
            self.handler,
            data_size_limit=self.door.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident=IDENT,
            tls_context=self.tls,
            timeout=IDLE_TIMEOUT,
            # The handler enforces both AUTH policies itself (TLS-or-loopback,
            # auth-required at MAIL), so it can also accept loopback clients.
            auth_require_tls=False,
            auth_required=False,
            proxy_protocol_timeout=PROXY_TIMEOUT if s.smtp_proxy_protocol else None,
            loop=asyncio.get_running_loop(),
            data_budget=self.data_budget,
            on_close=self._closed,
        )
        self.connections.add(protocol)
        return protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Resolved once: aiosmtpd would otherwise call getfqdn() (DNS) per connection.
        hostname = self.door.hostname
        if not hostname:
            hostname = str(await loop.run_in_executor(None, socket.getfqdn))
        self.server = await loop.create_server(
            lambda: self._protocol(hostname),
            host=self.door.host,
            port=self.door.port,
            reuse_address=True,
            reuse_port=self.door.reuse_port,
        )

    def serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def stop(self, grace: float = 20.0) -> None:
        if self.server is not None:
            self.server.close()
        await self.handler.drain(grace)
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.close()


class _TooMany(asyncio.Protocol):
    """Answers a connection over the limit with 421 (RFC 5321 3.8) and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have write().
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(f"{replies.TOO_MANY_CONNECTIONS}\r\n".encode())
        writer.close()
