"""Delivering one message to an account's SMTP server, reusing connections per server."""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiosmtplib
from aiosmtplib.email import quote_address

from mailgate_sender.outcome import Outcome, classify_exception, classify_reply

IDLE_SECONDS = 30.0
# An envelope address that is already a bare addr-spec (as the API and the SMTP
# door store them) becomes a path as it is; parsing it again costs more CPU than
# the rest of the command.
_BARE_ADDRESS = re.compile(r'[^\s<>()",;:\[\]\\]*')


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    secure: bool  # implicit TLS; otherwise STARTTLS when offered
    user: str | None
    password: str | None
    verify_tls: bool = True

    @classmethod
    def from_account(cls, smtp: dict[str, Any]) -> SmtpServer:
        auth = smtp.get("auth") or {}
        tls = smtp.get("tls") or {}
        return cls(
            host=str(smtp["host"]),
            port=int(smtp.get("port") or (465 if smtp.get("secure") else 587)),
            secure=bool(smtp.get("secure", False)),
            user=auth.get("user"),
            password=auth.get("pass"),
            verify_tls=bool(tls.get("rejectUnauthorized", True)),
        )

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpPool:
    """Idle authenticated connections keyed by server, reused for later messages."""

    def __init__(self, timeout: float, max_idle_per_server: int = 32, helo_name: str | None = None) -> None:
        self._timeout = timeout
        # aiosmtplib would otherwise resolve our FQDN on every connection, which
        # can take most of a second where DNS is slow.
        self._helo_name = helo_name or socket.getfqdn()
        # As many idle connections as we may use at once, so a busy server's
        # connections are reused instead of re-established per message.
        self._max_idle = max_idle_per_server
        self._tls_contexts: dict[bool, ssl.SSLContext] = {}
        self._idle: dict[SmtpServer, list[tuple[aiosmtplib.SMTP, float]]] = {}

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        # Building a context loads the system CA bundle (milliseconds of CPU):
        # once per process, not once per connection.
        context = self._tls_contexts.get(verify)
        if context is None:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls_contexts[verify] = context
        return context

    async def _connect(self, server: SmtpServer) -> aiosmtplib.SMTP:
        context = self._tls_context(server.verify_tls)
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.secure,
            start_tls=None if not server.secure else False,
            tls_context=context,
            timeout=self._timeout,
            local_hostname=self._helo_name,
        )
        await client.connect()
        if server.user:
            await client.login(server.user, server.password or "")
        if client.is_ehlo_or_helo_needed:
            # Before the first MAIL, so its options can use the server's extensions.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        return client

    async def _checkout(self, server: SmtpServer) -> tuple[aiosmtplib.SMTP, bool]:
        idle = self._idle.get(server, [])
        now = time.monotonic()
        while idle:
            client, since = idle.pop()
            if client.is_connected and now - since < IDLE_SECONDS:
                return client, True
            _close(client)
        return await self._connect(server), False

    def _checkin(self, server: SmtpServer, client: aiosmtplib.SMTP) -> None:
        idle = self._idle.setdefault(server, [])
        if client.is_connected and len(idle) < self._max_idle:
            idle.append((client, time.monotonic()))
        else:
            _close(client)

    async def deliver(
        self,
        server: SmtpServer,
        envelope_from: str,
        envelope_to: list[str],
        raw: bytes,
    ) -> Outcome:
        command: str | None = "CONNECT"
        try:
            client, reused = await self._checkout(server)
        except Exception as exc:
            return classify_exception(exc, "AUTH" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else command)
        try:
            outcome = await _transaction(client, envelope_from, envelope_to, raw)
        except aiosmtplib.SMTPServerDisconnected as exc:
            if not reused:
                _close(client)
                return classify_exception(exc, command)
            # A reused connection the server dropped while idle: nothing was
            # accepted on it, so one fresh connection is safe.
            _close(client)
            try:
                client = await self._connect(server)
                outcome = await _transaction(client, envelope_from, envelope_to, raw)
            except Exception as retry_exc:
                _close(client)
                return classify_exception(retry_exc, command)
        except Exception as exc:
            _close(client)
            return classify_exception(exc, command)
        if outcome.kind != "sent":
            try:
                await client.rset()
            except Exception:
                _close(client)
                return outcome
        self._checkin(server, client)
        return outcome

    def close(self) -> None:
        for idle in self._idle.values():
            for client, _ in idle:
                _close(client)
        self._idle.clear()


async def _transaction(
    client: aiosmtplib.SMTP,
    envelope_from: str,
    envelope_to: list[str],
    raw: bytes,
) -> Outcome:
    options: list[str] = []
    encoding = "ascii"
    if any(not a.isascii() for a in (envelope_from, *envelope_to)) and client.supports_extension(
        "smtputf8"
    ):
        options.append("SMTPUTF8")
        # aiosmtplib encodes addresses as ASCII unless told otherwise.
        encoding = "utf-8"
    if not raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if client.supports_extension("size"):
        options.append(f"SIZE={len(raw)}")
    # MAIL and RCPT through execute_command with the paths built here: the
    # same commands as SMTP.mail()/rcpt(), without re-parsing the addresses.
    options_bytes = [option.encode("ascii") for option in options]
    response = await client.execute_command(b"MAIL", b"FROM:" + _path(envelope_from, encoding), *options_bytes)
    if response.code != 250:
        return classify_reply(response.code, response.message, "MAIL FROM")
    refused: dict[str, str] = {}
    accepted: list[str] = []
    last_refusal: tuple[int, str] | None = None
    for rcpt in envelope_to:
        response = await client.execute_command(b"RCPT", b"TO:" + _path(rcpt, encoding))
        if response.code in (250, 251):
            accepted.append(rcpt)
        else:
            refused[rcpt] = f"{response.code} {response.message}"
            last_refusal = (response.code, response.message)
    if not accepted:
        assert last_refusal is not None
        outcome = classify_reply(last_refusal[0], last_refusal[1], "RCPT TO")
        return Outcome(outcome.kind, outcome.response, outcome.code, outcome.status,
                       "RCPT TO", "EENVELOPE", refused)
    try:
        response = await client.data(raw)
    except aiosmtplib.SMTPDataError as exc:
        return classify_reply(exc.code, exc.message, "DATA")
    outcome = classify_reply(response.code, response.message, "DATA")
    return Outcome(outcome.kind, outcome.response, outcome.code, outcome.status,
                   outcome.command, outcome.error_code, refused)


def _path(address: str, encoding: str) -> bytes:
    if _BARE_ADDRESS.fullmatch(address):
        return b"<" + address.encode(encoding) + b">"
    return quote_address(address).encode(encoding)


def _close(client: aiosmtplib.SMTP) -> None:
    try:
        client.close()
    except Exception:
        pass


