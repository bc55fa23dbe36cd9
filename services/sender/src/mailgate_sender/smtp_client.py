"""Delivering one message to an account's SMTP server, reusing connections per server.

Every phase has a bounded total time: connecting (TCP, TLS, EHLO, AUTH) one
``timeout``, each reply before the message one ``timeout``, the message itself
one ``timeout`` without progress, and the verdict on it ``data_timeout`` (RFC
5321 4.5.3.2.6 suggests 10 minutes: servers scan content before answering).
Once the whole message has left, no verdict (a timeout, a dropped connection)
is an unknown outcome, never a "try again": the server may have accepted it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiosmtplib
from aiosmtplib.email import quote_address

from mailgate_common.local_addresses import LocalAddresses
from mailgate_sender.dsn import Dsn
from mailgate_sender.outcome import Outcome, classify_exception, classify_reply
from mailgate_sender.smtp_connection import DATA, Abandoned, Command, SmtpConnection

log = logging.getLogger(__name__)

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
    # Log in even when the server does not offer AUTH (nodemailer's ``forceAuth``):
    # the server is then a configuration error, not a relay to use unauthenticated.
    force_auth: bool = False
    ehlo_name: str | None = None  # the account's ``smtpEhloName``, before any other

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
            force_auth=bool(smtp.get("forceAuth", False)),
        )

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class AuthNotOffered(aiosmtplib.SMTPException):
    """``forceAuth`` is set and the server does not offer AUTH: no message can go out this way."""


class SmtpPool:
    """Idle authenticated connections keyed by server, reused for later messages."""

    def __init__(self, timeout: float, max_idle_per_server: int = 32, helo_name: str | None = None,
                 data_timeout: float = 600.0, local_addresses: LocalAddresses | None = None) -> None:
        self._timeout = timeout
        self._data_timeout = data_timeout
        # aiosmtplib would otherwise resolve our FQDN on every connection, which
        # can take most of a second where DNS is slow.
        self._helo_name = helo_name or socket.getfqdn()
        # Each new connection binds to the next of these, greeting with its EHLO name.
        self._local = local_addresses or LocalAddresses(())
        self._dsn_missing: set[str] = set()  # servers already logged as not offering DSN
        # As many idle connections as we may use at once, so a busy server's
        # connections are reused instead of re-established per message.
        self._max_idle = max_idle_per_server
        self._tls_contexts: dict[bool, ssl.SSLContext] = {}
        self._idle: dict[SmtpServer, list[tuple[SmtpConnection, float]]] = {}
        self._busy: set[SmtpConnection] = set()  # in a transaction now
        self._next_sweep = time.monotonic() + IDLE_SECONDS

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

    async def _connect(self, server: SmtpServer) -> SmtpConnection:
        context = self._tls_context(server.verify_tls)
        local = self._local.next()
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.secure,
            start_tls=None if not server.secure else False,
            tls_context=context,
            timeout=self._timeout,
            local_hostname=server.ehlo_name or (local.ehlo_name if local else None) or self._helo_name,
            source_address=(local.ip, 0) if local else None,
        )
        try:
            # One deadline for all of it: aiosmtplib's timeout is per step, and
            # a server answering each step just in time would hold us for minutes.
            async with asyncio.timeout(self._timeout):
                await client.connect()
                if client.is_ehlo_or_helo_needed:
                    # Before AUTH and the first MAIL: both depend on the server's extensions.
                    try:
                        await client.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await client.helo()
                # nodemailer's rule: log in only where AUTH is offered (a relay that
                # trusts our address offers none), unless the account forces it.
                authenticated = False
                if server.user and (client.supports_extension("auth") or server.force_auth):
                    if not client.supports_extension("auth"):
                        raise AuthNotOffered("The server does not offer AUTH and smtp.forceAuth is set")
                    await client.login(server.user, server.password or "")
                    authenticated = True
        except BaseException:
            client.close()
            raise
        connection = SmtpConnection.take_over(client, self._timeout, self._data_timeout)
        connection.authenticated = authenticated
        return connection

    async def _checkout(self, server: SmtpServer) -> tuple[SmtpConnection, bool]:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        idle = self._idle.get(server, [])
        while idle:
            connection, since = idle.pop()
            if connection.usable and now - since < IDLE_SECONDS:
                return connection, True
            connection.quit()
        return await self._connect(server), False

    def _checkin(self, server: SmtpServer, connection: SmtpConnection) -> None:
        idle = self._idle.setdefault(server, [])
        if connection.usable and len(idle) < self._max_idle:
            idle.append((connection, time.monotonic()))
        else:
            connection.quit()

    def _sweep(self, now: float) -> None:
        """Close connections idle too long, of every server: an account whose
        settings changed (or that stopped sending) would otherwise keep them forever."""
        self._next_sweep = now + IDLE_SECONDS
        for server, idle in list(self._idle.items()):
            keep: list[tuple[SmtpConnection, float]] = []
            for connection, since in idle:
                if connection.usable and now - since < IDLE_SECONDS:
                    keep.append((connection, since))
                else:
                    connection.quit()
            if keep:
                self._idle[server] = keep
            else:
                del self._idle[server]

    def retire(self, server: SmtpServer) -> None:
        """An account's settings changed: its idle connections to the old ones are closed."""
        for connection, _ in self._idle.pop(server, []):
            connection.quit()

    async def deliver(
        self,
        server: SmtpServer,
        envelope_from: str,
        envelope_to: list[str],
        raw: bytes,
        may_send: Callable[[], bool] = lambda: True,
        dsn: Dsn | None = None,
    ) -> Outcome:
        """One mail transaction; ``may_send`` is asked right before the message
        body goes out (see ``SmtpConnection.send_body``): False raises ``Abandoned``.
        The outcome tells whether the connection logged in (``authenticated``)."""
        try:
            connection, reused = await self._checkout(server)
        except Exception as exc:
            return _connect_failure(exc)
        bodies = connection.bodies_sent
        if dsn is not None and not connection.supports("dsn") and server.label not in self._dsn_missing:
            self._dsn_missing.add(server.label)
            log.warning("%s does not offer DSN: messages asking for one go out without it", server.label)
        try:
            outcome = await self._transaction_or_close(connection, envelope_from, envelope_to, raw, may_send,
                                                       dsn)
        except aiosmtplib.SMTPServerDisconnected as exc:
            if not reused or connection.bodies_sent != bodies:
                return _failure(exc, connection)
            # A reused connection the server dropped while idle, before it had
            # the message: one fresh connection cannot send it twice.
            try:
                connection = await self._connect(server)
            except Exception as connect_exc:
                return _connect_failure(connect_exc)
            try:
                outcome = await self._transaction_or_close(connection, envelope_from, envelope_to, raw,
                                                           may_send, dsn)
            except Abandoned:
                raise
            except Exception as retry_exc:
                return _failure(retry_exc, connection)
        except Abandoned:
            raise
        except Exception as exc:
            return _failure(exc, connection)
        outcome = dataclasses.replace(outcome, authenticated=connection.authenticated)
        if outcome.kind != "sent" and not await connection.reset():
            return outcome
        self._checkin(server, connection)
        return outcome

    async def _transaction_or_close(
        self, connection: SmtpConnection, envelope_from: str, envelope_to: list[str], raw: bytes,
        may_send: Callable[[], bool], dsn: Dsn | None,
    ) -> Outcome:
        """A transaction that failed or was cancelled midway leaves its connection closed
        (aborted if its message was cut short), never pooled."""
        self._busy.add(connection)
        try:
            return await _transaction(connection, envelope_from, envelope_to, raw, may_send, dsn)
        except BaseException:
            connection.close()
            raise
        finally:
            self._busy.discard(connection)

    def interrupt(self, reason: str) -> None:
        """Ends every transaction under way now: one waiting for the verdict on its message
        ends with an unknown outcome, one writing its message aborts it (see ``SmtpConnection``)."""
        for connection in list(self._busy):
            connection.interrupt(reason)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection, _ in idle:
                connection.quit()
        self._idle.clear()


def _failure(exc: Exception, connection: SmtpConnection) -> Outcome:
    return dataclasses.replace(classify_exception(exc, connection.at), authenticated=connection.authenticated)


def _connect_failure(exc: Exception) -> Outcome:
    if isinstance(exc, AuthNotOffered):
        return Outcome("permanent", str(exc), command="AUTH", error_code="EAUTH", authenticated=False)
    return classify_exception(exc, "AUTH" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else "CONNECT")


async def _transaction(
    connection: SmtpConnection,
    envelope_from: str,
    envelope_to: list[str],
    raw: bytes,
    may_send: Callable[[], bool],
    dsn: Dsn | None = None,
) -> Outcome:
    """MAIL, RCPT for each recipient, DATA, the message.  Written at once when the
    server pipelines, then the replies are read in the same order as one at a time."""
    options: list[bytes] = []
    encoding = "ascii"
    if any(not a.isascii() for a in (envelope_from, *envelope_to)) and connection.supports("smtputf8"):
        options.append(b"SMTPUTF8")
        encoding = "utf-8"
    if not raw.isascii() and connection.supports("8bitmime"):
        options.append(b"BODY=8BITMIME")
    if connection.supports("size"):
        options.append(b"SIZE=%d" % len(raw))
    if dsn is not None and connection.supports("dsn"):
        options.extend(dsn.mail_options())
        rcpt_options = dsn.rcpt_options()
        rcpts = [Command("RCPT TO", b" ".join([b"RCPT TO:" + _path(rcpt, encoding), *rcpt_options]))
                 for rcpt in envelope_to]
    else:
        rcpts = [Command("RCPT TO", b"RCPT TO:" + _path(rcpt, encoding)) for rcpt in envelope_to]
    mail = Command("MAIL FROM", b" ".join([b"MAIL FROM:" + _path(envelope_from, encoding), *options]))
    pipelined = connection.pipelining
    if pipelined:
        connection.send(mail, *rcpts, DATA)
    else:
        connection.send(mail)

    reply = await connection.reply()
    failure = None if reply.code == 250 else classify_reply(reply.code, reply.message, "MAIL FROM")
    if failure is not None and not pipelined:
        return failure
    refused: dict[str, str] = {}
    accepted = 0
    last_refusal = None
    for rcpt, command in zip(envelope_to, rcpts, strict=True):
        if not pipelined:
            connection.send(command)
        reply = await connection.reply()
        if reply.code in (250, 251):
            accepted += 1
        else:
            refused[rcpt] = f"{reply.code} {reply.message}"
            last_refusal = reply
    if failure is None and not accepted and last_refusal is not None:
        failure = replace(classify_reply(last_refusal.code, last_refusal.message, "RCPT TO"), refused=refused)
    if not pipelined:
        if failure is not None:
            return failure
        connection.send(DATA)

    reply = await connection.reply()
    if reply.code != 354:
        return failure or replace(classify_reply(reply.code, reply.message, "DATA"), refused=refused)
    if failure is not None:
        # RFC 2920 3.1: a server may answer 354 although MAIL or every RCPT
        # failed; the client then ends the DATA with no message.
        connection.send_end_of_data()
        await connection.reply()
        return failure
    await connection.send_body(raw, may_send)
    reply = await connection.verdict()
    return replace(classify_reply(reply.code, reply.message, "DATA"), refused=refused)


def _path(address: str, encoding: str) -> bytes:
    if _BARE_ADDRESS.fullmatch(address):
        return b"<" + address.encode(encoding) + b">"
    return quote_address(address).encode(encoding)
