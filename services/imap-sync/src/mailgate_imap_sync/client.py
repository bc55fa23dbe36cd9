"""Opening an authenticated IMAP connection from an account's ``imap`` settings.

``secure: true`` means implicit TLS; otherwise STARTTLS is used when the
server offers it (or required with ``tls.requireTLS``), else plain text.
``tls.rejectUnauthorized: false`` accepts self-signed certificates, as in
EmailEngine.  aioimaplib 2.0.3 has no STARTTLS helper, so the upgrade is done
on its transport with ``loop.start_tls``.

Every command goes through a ``Connection`` method with an outer deadline
(aioimaplib's own timer restarts on every line received, so a server that
trickles bytes would hold a command for ever); a command past its deadline
drops the connection.  aioimaplib itself runs on ``protocol.BoundedProtocol``:
responses of any number of lines, bytes per command bounded.

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
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type hints

from mailgate_common import urls
from mailgate_common.account_log import Tracer
from mailgate_imap_sync import parse
from mailgate_imap_sync.protocol import (
    BoundedProtocol,
    Client,
    ConnectError,
    ImapError,
    ProtocolError,
    ResponseTooLarge,
    ResumedClient,
)

__all__ = ["AuthError", "ConnectError", "Connection", "ImapError", "ProtocolError", "RefusedHost",
           "ResponseTooLarge", "connect", "quote"]

T = TypeVar("T")

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)

# A command moving this many bytes (an APPEND, a message fetched whole) gets one
# more second on top of the connection's timeout: 12 MiB may take a while.
MIN_BYTES_PER_SECOND = 256 * 1024


class AuthError(ImapError):
    """The server rejected the credentials (retry only much later)."""


class RefusedHost(ImapError):
    """The account may only use public mail servers and this host is not one."""


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

    __slots__ = ("_client", "_listener", "capabilities", "lost", "max_bytes", "timeout", "transport")

    def __init__(self, client: aioimaplib.IMAP4, io_timeout: float, max_bytes: int) -> None:
        self._client: aioimaplib.IMAP4 | None = client
        self._listener: IdleListener | None = None
        self.timeout = io_timeout
        self.max_bytes = max_bytes
        self.lost = False
        # Filled in by ``connect``; shared by all connections to the same server.
        self.capabilities: frozenset[str] = frozenset()
        self.transport: asyncio.Transport | None = None

    @property
    def _protocol(self) -> BoundedProtocol:
        if self._client is None:
            raise ImapError("connection is in IDLE")
        protocol: BoundedProtocol = self._client.protocol
        return protocol

    def end_idle(self) -> None:
        """End a running IDLE early (only once the server accepted it: woken before,
        IDLE would count as refused)."""
        if self._listener is not None and self._listener.accepted:
            self._listener.wake()

    def on_lost(self, _exc: Exception | None = None) -> None:
        self.lost = True
        if self._listener is not None:
            self._listener.wake()

    async def _run(self, what: str, command: Awaitable[T], size: int = 0) -> T:
        """``command`` within the connection's deadline; past it the connection is dropped."""
        deadline = self.timeout + size / MIN_BYTES_PER_SECOND
        try:
            async with asyncio.timeout(deadline):
                return await command
        except (TimeoutError, aioimaplib.CommandTimeout):
            self.abort(ConnectError(f"{what}: no complete answer within {deadline:.0f} s"))
            raise ConnectError(f"{what}: no complete answer within {deadline:.0f} s") from None
        except aioimaplib.AioImapException as exc:
            self.abort(ProtocolError(f"{what}: {type(exc).__name__}: {exc}"))
            raise ProtocolError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def abort(self, error: ImapError) -> None:
        """Drop the connection; whatever is pending fails with ``error``."""
        self.lost = True
        if self._client is not None:
            self._protocol.fail(error)
        elif self.transport is not None:
            self.transport.abort()

    async def _checked(self, what: str, command: Awaitable[Any], size: int = 0) -> Any:
        response = await self._run(what, command, size)
        if response.result != "OK":
            raise ImapError(f"{what} failed: {response.result} {_text(response)}")
        return response

    async def command(self, name: str, *args: str) -> Any:
        """A command aioimaplib has no method for (STARTTLS)."""
        protocol = self._protocol
        return await self._run(name, protocol.execute(
            aioimaplib.Command(name, protocol.new_tag(), *args, loop=protocol.loop)))

    async def list_folders(self) -> list[parse.Folder]:
        protocol = self._protocol
        if "SPECIAL-USE" in self.capabilities:
            response = await self._run("LIST", protocol.simple_command(
                "LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)"))
            if response.result == "OK":
                return parse.parse_list(response.lines)
        response = await self._checked("LIST", protocol.simple_command("LIST", '""', '"*"'))
        return parse.parse_list(response.lines)

    async def select(self, path: str) -> dict[str, int]:
        protocol = self._protocol
        # What the server announces from here on is about this folder.
        protocol.expunged = False
        response = await self._checked(f"SELECT {path}", protocol.select(quote(path)))
        return parse.select_info(response.lines)

    def announced(self) -> tuple[int | None, bool]:
        """The folder's message count as last announced (EXISTS) since SELECT, and
        whether an expunge was announced (servers tell while other commands run)."""
        protocol = self._protocol
        return protocol.exists, protocol.expunged

    async def enable(self, capability: str) -> None:
        await self._run("ENABLE", self._protocol.simple_command("ENABLE", capability))

    async def status(self, path: str, items: str) -> Any:
        return await self._run("STATUS", self._protocol.simple_command("STATUS", quote(path), items))

    async def noop(self) -> int:
        """NOOP; the kinds of change (``parse.Change``) the server reported meanwhile."""
        response = await self._checked("NOOP", self._protocol.simple_command("NOOP"))
        kinds = 0
        for line in response.lines:
            kinds |= parse.change_of(bytes(line))
        return kinds

    async def fetch(self, sequence: str, items: str) -> list[parse.FetchedMessage]:
        """FETCH by sequence numbers (stable while the command runs: no EXPUNGE is sent)."""
        response = await self._checked("FETCH", self._protocol.fetch(sequence, items))
        return parse.parse_fetch(response.lines)

    async def uid_fetch(self, uids: str, items: str, size: int = 0) -> list[Any]:
        """UID FETCH; the response lines.  ``size``: the bytes expected, for the deadline."""
        response = await self._checked("UID FETCH", self._protocol.fetch(uids, items, by_uid=True), size)
        lines: list[Any] = response.lines
        return lines

    async def uid_search(self, *criteria: str) -> list[int]:
        response = await self._checked("UID SEARCH", self._protocol.search(*criteria, charset=None, by_uid=True))
        # aioimaplib hands over "* SEARCH 1 2 (MODSEQ 9)" as "1 2 (MODSEQ 9)", the last line
        # being the tagged answer's text.
        return parse.search_result(response.lines[:-1])

    async def uid_store(self, uid: int, operation: str, flags: list[str]) -> None:
        await self._checked("UID STORE", self._protocol.store(str(uid), operation, "(" + " ".join(flags) + ")",
                                                               by_uid=True))

    async def append(self, raw: bytes, mailbox: str, flags: str,
                     date: datetime | None = None) -> tuple[int, int] | None:
        """APPEND; the new message's (uidvalidity, uid) when the server says (UIDPLUS's APPENDUID)."""
        response = await self._checked(f"APPEND to {mailbox}", self._protocol.append(
            raw, quote(mailbox), flags, date), len(raw))
        found = _APPENDUID.search(bytes(response.lines[-1])) if response.lines else None
        return (int(found.group(1)), int(found.group(2))) if found else None

    async def uid_command(self, name: str, *args: str) -> list[Any]:
        """``UID <name> args`` (MOVE, COPY, EXPUNGE, STORE with a uid set); the response lines,
        untagged and tagged, where the server puts COPYUID."""
        protocol = self._protocol
        response = await self._checked(f"UID {name}", protocol.execute(
            aioimaplib.Command(name, protocol.new_tag(), *args, prefix="UID", loop=protocol.loop)))
        lines: list[Any] = response.lines
        return lines

    async def expunge(self) -> None:
        await self._checked("EXPUNGE", self._protocol.expunge())

    async def expunge_uids(self, uid_set: str) -> None:
        """Delete these messages of the selected folder for good: only them where UIDPLUS
        allows, else every message marked \\Deleted there (plain EXPUNGE)."""
        await self.uid_command("STORE", uid_set, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            await self.uid_command("EXPUNGE", uid_set)
        else:
            await self.expunge()

    async def mailbox_command(self, name: str, *args: str) -> tuple[str, bytes]:
        """CREATE / RENAME / DELETE (quoted names in ``args``): the result (OK, NO, BAD)
        and the text of the tagged answer, left to the caller to judge."""
        response = await self._run(name, self._protocol.simple_command(name, *args))
        text = bytes(response.lines[-1]) if response.lines else b""
        return str(response.result), text

    async def search(self, criteria: list[str], charset: str | None) -> list[int]:
        """UID SEARCH with criteria compiled by ``search.compile_search`` (literals inline: LITERAL+)."""
        response = await self._checked("UID SEARCH", self._protocol.search(*criteria, charset=charset, by_uid=True))
        return parse.search_result(response.lines[:-1])

    async def idle(self, duration: float, settle: float) -> int:
        """IDLE on the selected folder for up to ``duration`` seconds; returns as soon as
        the server reports a change (plus ``settle`` seconds, so that a burst of pushes
        makes one resync) the kinds of change (``parse.Change``), 0 if none.  Raises
        ``ConnectError`` if the connection drops."""
        transport = self.transport
        if self._client is None or transport is None or self.lost:
            raise ConnectError("connection lost")
        tracer = self._protocol.tracer  # carried over to the client resumed after IDLE
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
            if listener.failure is not None:
                raise ResponseTooLarge(listener.failure)
            if self.lost:
                raise ConnectError("connection lost")
            assert listener.result is not None
            if not listener.result.upper().startswith(IDLE_TAG + b" OK"):
                raise ImapError(f"IDLE failed: {listener.result.decode(errors='replace')}")
        finally:
            self._listener = None
        self._client = ResumedClient(transport, self.timeout, self.max_bytes, self.on_lost, self.capabilities)
        if tracer is not None:
            self._client.protocol.tracer = tracer
        return listener.changed

    async def close(self) -> None:
        # LOGOUT is a courtesy; in IDLE or after a loss the socket is simply closed.
        client = self._client
        if not self.lost and client is not None and client.protocol.failure is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 2)
        transport = self.transport or (client.protocol.transport if client is not None else None)
        if transport is not None:
            transport.close()


# One IDLE at a time per connection and nothing else in flight: a fixed tag will do.
IDLE_TAG = b"MGIDLE"
# A line longer than this without CRLF (a literal, say) is not an IDLE status line.
MAX_LINE = 8192


class IdleListener(asyncio.Protocol):
    """Reads a connection while it is in IDLE: the continuation, the untagged
    pushes (noting which kinds of change they report) and the tagged end.

    Dovecot also sends ``* OK Still here`` every 2 minutes: taken as a change,
    every account resynced every 2 minutes - all at the same moment after they
    connected together, which swamped the database pool.
    """

    __slots__ = ("_connection", "_partial", "_received", "_waiter", "accepted", "changed", "failure", "result")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._partial = b""
        self._received = 0
        self._waiter: asyncio.Future[None] | None = None
        self.accepted = False
        self.changed = 0
        self.failure: str | None = None
        self.result: bytes | None = None

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._connection.max_bytes:
            # An endless stream instead of a few status lines.
            self.failure = f"the server sent more than {self._connection.max_bytes} bytes in IDLE"
            self._connection.abort(ResponseTooLarge(self.failure))
            return
        lines = (self._partial + data).split(b"\r\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""
            self._note(parse.Change.FLAGS)
        for line in lines:
            if line.startswith(b"+") and not self.accepted:
                self.accepted = True
                self.wake()
            elif line[:len(IDLE_TAG) + 1].upper() == IDLE_TAG + b" ":
                self.result = line
                self.wake()
            else:
                self._note(parse.change_of(line))

    def _note(self, kinds: int) -> None:
        if kinds:
            first = not self.changed
            self.changed |= kinds
            if first:
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


def _text(response: Any) -> str:
    return " ".join(bytes(x).decode(errors="replace") for x in response.lines[-1:]).strip()


def quote(value: str) -> str:
    """An IMAP quoted string (folder names, search keys)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _public_address(host: str) -> str:
    """The address to connect to for an account limited to public mail servers."""
    try:
        return str(await urls.check_public_host(host))
    except urls.PrivateHost as exc:
        raise RefusedHost(str(exc)) from None
    except urls.UnsafeUrl as exc:  # does not resolve
        raise ConnectError(str(exc)) from None


# Steps of a connection (greeting, STARTTLS, capabilities, login, capabilities),
# each within the timeout: the whole never takes longer than this many timeouts.
CONNECT_STEPS = 5


async def connect(settings: dict[str, Any], io_timeout: float, max_bytes: int,
                  public_only: bool = False, local_address: str | None = None,
                  tracer: Tracer | None = None) -> Connection:
    """A logged-in connection.  ``public_only``: refuse a host that is not public
    (checked on each connect: DNS answers change)."""
    host, port = settings["host"], int(settings["port"])
    address = await _public_address(host) if public_only else host
    async with asyncio.timeout(CONNECT_STEPS * io_timeout):
        try:
            return await _connect(settings, host, address, port, io_timeout, max_bytes, local_address, tracer)
        except TimeoutError as exc:
            raise ConnectError(f"no answer from {host}:{port} within {io_timeout:.0f} s") from exc


async def _connect(settings: dict[str, Any], host: str, address: str, port: int, io_timeout: float,
                   max_bytes: int, local_address: str | None = None, tracer: Tracer | None = None) -> Connection:
    secure = bool(settings.get("secure"))
    tls = settings.get("tls") or {}
    client = Client(address, port, io_timeout, max_bytes,
                    ssl_context=_tls_context(settings) if secure else None, server_hostname=host,
                    local_address=local_address)
    if tracer is not None:  # only then: an attribute per watched account costs memory
        client.protocol.tracer = tracer
    connection = Connection(client, io_timeout, max_bytes)
    client.protocol.conn_lost_cb = connection.on_lost
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError, ssl.SSLError, aioimaplib.AioImapException, ImapError) as exc:
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
        await connection._run("CAPABILITY", client.protocol.capability())
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
    protocol = connection._protocol
    response = await connection.command("STARTTLS")
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
    await connection._run("CAPABILITY", protocol.capability())
