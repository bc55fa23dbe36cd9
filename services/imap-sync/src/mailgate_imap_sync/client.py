"""Opening an authenticated IMAP connection from an account's ``imap`` settings.

``secure: true`` means implicit TLS; otherwise STARTTLS is used when the
server offers it (or required with ``tls.requireTLS``), else plain text.
``tls.rejectUnauthorized: false`` accepts self-signed certificates, as in
EmailEngine.  aioimaplib 2.0.3 has no STARTTLS helper, so the upgrade is done
on its transport with ``loop.start_tls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import Any

from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type hints

from mailgate_imap_sync import parse

# Put on the IDLE push queue when the connection goes away.
LOST = [b"* BYE connection lost"]


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
    """A logged-in IMAP connection; ``lost`` is set when the socket goes away."""

    def __init__(self, client: aioimaplib.IMAP4, lost: asyncio.Event) -> None:
        self.client = client
        self.lost = lost

    @property
    def capabilities(self) -> set[str]:
        return set(self.client.protocol.capabilities)

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

    async def close(self) -> None:
        # LOGOUT is a courtesy; in IDLE or after a loss the socket is simply closed.
        if not self.lost.is_set() and not self.client.has_pending_idle():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.logout(), 2)
        transport = self.client.protocol.transport
        if transport is not None:
            transport.close()


def _text(response: aioimaplib.Response) -> str:
    return " ".join(bytes(x).decode(errors="replace") for x in response.lines[-1:]).strip()


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def connect(settings: dict[str, Any], io_timeout: float) -> Connection:
    host, port = settings["host"], int(settings["port"])
    secure = bool(settings.get("secure"))
    tls = settings.get("tls") or {}
    lost = asyncio.Event()

    def on_lost(_exc: Exception | None) -> None:
        lost.set()
        # Also wakes a watcher waiting in IDLE, which waits on this queue alone.
        client.protocol.idle_queue.put_nowait(LOST)

    client = aioimaplib.IMAP4(host, port, timeout=io_timeout, conn_lost_cb=on_lost,
                              ssl_context=_tls_context(settings) if secure else None)
    connection = Connection(client, lost)
    try:
        await client.wait_hello_from_server()
    except (OSError, TimeoutError, ssl.SSLError, aioimaplib.AioImapException) as exc:
        await connection.close()
        raise ConnectError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    try:
        if not secure and not tls.get("disableStartTls"):
            if "STARTTLS" in connection.capabilities:
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
    if not any(c.startswith("IDLE") for c in connection.capabilities) or len(connection.capabilities) < 3:
        await client.protocol.capability()
    client.protocol.capabilities = _shared_capabilities(frozenset(client.protocol.capabilities))
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
    transport = await asyncio.wait_for(
        loop.start_tls(protocol.transport, protocol, _tls_context(settings),
                       server_hostname=settings["host"]),
        io_timeout,
    )
    protocol.transport = transport
    # Capabilities before TLS must not be trusted (RFC 3501 6.2.1).
    await asyncio.wait_for(protocol.capability(), io_timeout)
