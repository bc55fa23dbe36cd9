"""Opening an authenticated IMAP connection from an account's ``imap`` settings.

``secure: true`` means implicit TLS; otherwise STARTTLS is used when the
server offers it (or required with ``tls.requireTLS``), else plain text.
``tls.rejectUnauthorized: false`` accepts self-signed certificates, as in
EmailEngine.  aioimaplib 2.0.3 has no STARTTLS helper, so the upgrade is done
on its transport with ``loop.start_tls``.

A watched account spends nearly all its life in IDLE, so ``Connection.idle``
holds as little as possible meanwhile: aioimaplib's client (its protocol,
queue, events and locks: about a quarter of an account's memory) is dropped
and a small ``IdleListener`` reads the socket instead; once IDLE ends a fresh
aioimaplib client is put back on the same, still logged-in, connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from typing import Any

from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type hints

from mailgate_imap_sync import parse


class ImapError(Exception):
    """Anything that went wrong talking to the server (retry with backoff)."""


class ConnectError(ImapError):
    """The server could not be reached or the TLS/greeting failed."""


class AuthError(ImapError):
    """The server rejected the credentials (retry only much later)."""


@functools.cache
def _shared_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls_context(settings: dict[str, Any]) -> ssl.SSLContext:
    # One context per verification mode for the whole process: each context loads
    # the system CA store (~0.9 MB), which per connection made up nearly all of an
    # account's memory.  Contexts are never changed after creation, so sharing is safe.
    return _shared_context((settings.get("tls") or {}).get("rejectUnauthorized") is not False)


class Connection:
    """A logged-in IMAP connection; ``lost`` is True once the socket went away."""

    __slots__ = ("_client", "_listener", "capabilities", "lost", "timeout", "transport")

    def __init__(self, client: aioimaplib.IMAP4, io_timeout: float) -> None:
        self._client: aioimaplib.IMAP4 | None = client
        self._listener: IdleListener | None = None
        self.timeout = io_timeout
        self.lost = False
        # Filled in by ``connect``; shared by all connections to the same server.
        self.capabilities: frozenset[str] = frozenset()
        self.transport: asyncio.Transport | None = None

    @property
    def client(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ImapError("connection is in IDLE")
        return self._client

    def on_lost(self, _exc: Exception | None = None) -> None:
        self.lost = True
        if self._listener is not None:
            self._listener.wake()

    async def command(self, name: str, *args: str) -> aioimaplib.Response:
        response = await self.client.protocol.execute(
            aioimaplib.Command(name, self.client.protocol.new_tag(), *args,
                               loop=self.client.protocol.loop)
        )
        return response

    async def checked(self, response: aioimaplib.Response, what: str) -> aioimaplib.Response:
        if response.result != "OK":
            raise ImapError(f"{what} failed: {response.result} {_text(response)}")
        return response

    async def list_folders(self) -> list[parse.Folder]:
        if "SPECIAL-USE" in self.capabilities:
            response = await asyncio.wait_for(
                self.client.protocol.simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)"),
                self.client.timeout,
            )
            if response.result == "OK":
                return parse.parse_list(response.lines)
        response = await self.checked(await self.client.list('""', '"*"'), "LIST")
        return parse.parse_list(response.lines)

    async def select(self, path: str) -> dict[str, int]:
        response = await self.checked(await self.client.select(_quote(path)), f"SELECT {path}")
        return parse.select_info(response.lines)

    async def idle(self, duration: float, settle: float) -> bool:
        """IDLE on the selected folder for up to ``duration`` seconds; True as soon as
        the server reports a change (plus ``settle`` seconds, so that a burst of
        pushes makes one resync).  Raises ``ConnectError`` if the connection drops."""
        transport = self.transport
        if self._client is None or transport is None or self.lost:
            raise ConnectError("connection lost")
        listener = IdleListener(self)
        # From here on the listener alone reads the socket; aioimaplib's client,
        # idle between commands, is let go until IDLE is over.
        self._listener, self._client = listener, None
        transport.set_protocol(listener)
        try:
            transport.write(IDLE_TAG + b" IDLE\r\n")
            await listener.wait(self.timeout)
            if not listener.accepted and listener.result is None and not self.lost:
                raise ConnectError("no answer to IDLE")
            if listener.accepted and listener.result is None and not listener.changed:
                await listener.wait(duration)
            if listener.changed:
                # Later pushes of the same burst are covered by the same resync.
                await asyncio.sleep(settle)
            if listener.result is None and not self.lost:
                transport.write(b"DONE\r\n")
                deadline = asyncio.get_running_loop().time() + self.timeout
                while listener.result is None and not self.lost:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        raise ConnectError("no answer to DONE")
                    await listener.wait(left)
            if self.lost:
                raise ConnectError("connection lost")
            assert listener.result is not None
            if not listener.result.upper().startswith(IDLE_TAG + b" OK"):
                raise ImapError(f"IDLE failed: {listener.result.decode(errors='replace')}")
        finally:
            self._listener = None
        self._client = _resumed_client(transport, self)
        return listener.changed

    async def close(self) -> None:
        # LOGOUT is a courtesy; in IDLE or after a loss the socket is simply closed.
        client = self._client
        if not self.lost and client is not None and not client.has_pending_idle():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 2)
        transport = self.transport or (client.protocol.transport if client is not None else None)
        if transport is not None:
            transport.close()


# One IDLE at a time per connection and nothing else in flight: a fixed tag will do.
IDLE_TAG = b"MGIDLE"
_CHANGE = re.compile(rb"^(\* )?(\d+ (EXISTS|EXPUNGE|FETCH|RECENT)|VANISHED)", re.IGNORECASE)
# A line longer than this without CRLF (a literal, say) is not an IDLE status line.
MAX_LINE = 8192


class IdleListener(asyncio.Protocol):
    """Reads a connection while it is in IDLE: the continuation, the untagged
    pushes (noting whether one reports a change) and the tagged end.

    Dovecot also sends ``* OK Still here`` every 2 minutes: taken as a change,
    every account resynced every 2 minutes - all at the same moment after they
    connected together, which swamped the database pool.
    """

    __slots__ = ("_connection", "_partial", "_waiter", "accepted", "changed", "result")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._partial = b""
        self._waiter: asyncio.Future[None] | None = None
        self.accepted = False
        self.changed = False
        self.result: bytes | None = None

    def data_received(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\r\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""
            self.changed = True
        for line in lines:
            if line.startswith(b"+") and not self.accepted:
                self.accepted = True
                self.wake()
            elif line[:len(IDLE_TAG) + 1].upper() == IDLE_TAG + b" ":
                self.result = line
                self.wake()
            elif _CHANGE.match(line):
                if not self.changed:
                    self.changed = True
                    self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.on_lost(exc)

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until something noteworthy arrives, the connection drops or ``seconds`` passed."""
        if self._connection.lost:
            return
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), self.wake)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None


class _ResumedIMAP4(aioimaplib.IMAP4):  # type: ignore[misc]  # aioimaplib ships no type hints
    """aioimaplib's client over a connection that is already open and logged in."""

    def __init__(self, transport: asyncio.Transport, connection: Connection) -> None:
        self._resume = transport
        super().__init__(timeout=connection.timeout, conn_lost_cb=connection.on_lost)

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Any = None, ssl_context: ssl.SSLContext | None = None) -> None:
        protocol = aioimaplib.IMAP4ClientProtocol(asyncio.get_running_loop(), conn_lost_cb)
        self.protocol = protocol
        self._resume.set_protocol(protocol)
        protocol.connection_made(self._resume)
        del self._resume


def _resumed_client(transport: asyncio.Transport, connection: Connection) -> aioimaplib.IMAP4:
    client = _ResumedIMAP4(transport, connection)
    # IDLE is only ever entered with a folder selected.
    client.protocol.state = aioimaplib.SELECTED
    client.protocol.capabilities = connection.capabilities
    return client


def _text(response: aioimaplib.Response) -> str:
    return " ".join(bytes(x).decode(errors="replace") for x in response.lines[-1:]).strip()


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def connect(settings: dict[str, Any], io_timeout: float) -> Connection:
    host, port = settings["host"], int(settings["port"])
    secure = bool(settings.get("secure"))
    tls = settings.get("tls") or {}
    client = aioimaplib.IMAP4(host, port, timeout=io_timeout,
                              ssl_context=_tls_context(settings) if secure else None)
    connection = Connection(client, io_timeout)
    client.protocol.conn_lost_cb = connection.on_lost
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError, ssl.SSLError, aioimaplib.AioImapException) as exc:
        await connection.close()
        raise ConnectError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    try:
        if not secure and not tls.get("disableStartTls"):
            if "STARTTLS" in client.protocol.capabilities:
                await _starttls(connection, settings, io_timeout)
            elif tls.get("requireTLS"):
                raise ConnectError("server does not offer STARTTLS")
        auth = settings.get("auth") or {}
        response = await client.login(auth.get("user", ""), auth.get("pass") or "")
    except ImapError:
        await connection.close()
        raise
    except (OSError, TimeoutError, ssl.SSLError, aioimaplib.AioImapException) as exc:
        await connection.close()
        raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
    if response.result != "OK":
        await connection.close()
        raise AuthError(_text(response) or "Invalid credentials")
    # Capabilities change after login (e.g. CONDSTORE appears).
    capabilities = client.protocol.capabilities
    if not any(c.startswith("IDLE") for c in capabilities) or len(capabilities) < 3:
        await client.protocol.capability()
    connection.capabilities = _shared_capabilities(frozenset(client.protocol.capabilities))
    client.protocol.capabilities = connection.capabilities
    connection.transport = client.protocol.transport
    return connection


_capability_sets: dict[frozenset[str], frozenset[str]] = {}


def _shared_capabilities(capabilities: frozenset[str]) -> frozenset[str]:
    """One copy of each distinct capability list: accounts on the same server all
    get the same ~40 strings, which held per connection cost ~6 KB an account.
    aioimaplib only ever replaces the set, never changes it, so sharing is safe."""
    return _capability_sets.setdefault(capabilities, capabilities)


async def _starttls(connection: Connection, settings: dict[str, Any], io_timeout: float) -> None:
    protocol = connection.client.protocol
    response = await asyncio.wait_for(connection.command("STARTTLS"), io_timeout)
    if response.result != "OK":
        raise ConnectError(f"STARTTLS refused: {_text(response)}")
    loop = asyncio.get_running_loop()
    # uvloop's plain transport keeps calling (and so keeps alive) the protocol it
    # had before ``start_tls``: give it a stateless one, so that the aioimaplib
    # protocol dropped during IDLE is really freed.
    protocol.transport.set_protocol(asyncio.Protocol())
    transport = await asyncio.wait_for(
        loop.start_tls(protocol.transport, protocol, _tls_context(settings),
                       server_hostname=settings["host"]),
        io_timeout,
    )
    protocol.transport = transport
    # Capabilities before TLS must not be trusted (RFC 3501 6.2.1).
    await asyncio.wait_for(protocol.capability(), io_timeout)
