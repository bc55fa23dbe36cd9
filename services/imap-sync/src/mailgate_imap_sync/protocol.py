"""aioimaplib's client protocol, made safe against large and hostile servers.

The ONE module that reaches into aioimaplib's internals, written against
aioimaplib 2.0.3 (``tests/unit/test_imap_protocol.py`` checks every internal it
relies on and fails if an upgrade changes them).  What 2.0.3 does, and why it
is replaced here:

* ``_handle_responses`` recurses once per response line: a read holding about
  1,000 lines (a UID/FLAGS listing of a big folder: uvloop and TLS hand over up
  to 256 KB at a time) overflows the stack, the transport closes and the
  command never completes.  Here one loop walks a buffer.
* Partial lines are kept as ``incomplete_line + data`` (quadratic for a long
  line), and any literal a server announces (``{4000000000}``) is accumulated.
  Here the bytes received since the last tagged response (plus what keeping
  each line costs) are counted and the connection is dropped past
  ``max_bytes``; an announced literal over it drops the connection at once.
* ``FetchCommand.wait_data`` rescans every line received so far on each new
  one (quadratic in the lines of a FETCH response).  Here the parentheses are
  counted as lines arrive.
* A lost connection leaves pending commands waiting for ever.  Here they fail
  at once with the reason.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aioimaplib import aioimaplib  # type: ignore[import-untyped]  # ships no type hints

from mailgate_common.account_log import Tracer
from mailgate_common.failures import TransientError

_LITERAL = re.compile(rb"\{(\d+)\}$")
# What holding one response line costs beyond its bytes (object header, list slot).
LINE_OVERHEAD = 64


class ImapError(Exception):
    """Anything that went wrong talking to the server (retry with backoff)."""


class ConnectError(ImapError, TransientError):
    """The server could not be reached, or the connection broke or timed out: it may come back."""


class ResponseTooLarge(ImapError):
    """The server sent more than a command may receive; the connection was dropped."""


class ProtocolError(ImapError):
    """The server sent something that is not IMAP; the connection was dropped."""


class _FetchCommand(aioimaplib.FetchCommand):  # type: ignore[misc]  # untyped base
    """aioimaplib's FETCH command, told in O(1) per line whether a response is complete."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Open parentheses since the last "n FETCH (" line; literals (bytearray) do not count.
        self._open = 0
        super().__init__(*args, **kwargs)

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if isinstance(line, bytes):
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self._open = 0
            self._open += line.count(b"(") - line.count(b")")

    def wait_data(self) -> bool:
        return bool(self._open != 0)


class BoundedProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped base
    # aioimaplib's attributes this class uses (its own are untyped).
    current_command: Any
    pending_sync_command: Any
    pending_async_commands: dict[str, Any]
    transport: Any
    loop: asyncio.AbstractEventLoop

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: Any = None,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(loop, conn_lost_cb)
        self.max_bytes = max_bytes
        self.failure: ImapError | None = None
        self._buffer = bytearray()
        # Bytes received since the last tagged response (the current command's share).
        self._received = 0
        # Literal bytes still expected by ``current_command``.
        self._literal_left = 0
        # What the server announced on its own while commands ran: the last EXISTS
        # count and whether anything was expunged (read by the watcher after a sync).
        self.exists: int | None = None
        self.expunged = False

    # --- reading ----------------------------------------------------------

    # The account's protocol log (mailgate_common.account_log), when its ``logs`` is on.
    tracer: Tracer | None = None

    def send(self, line: str, scrub: str | None = None) -> None:
        if self.tracer is not None:
            self.tracer.sent(line.encode())
        super().send(line, scrub)

    def data_received(self, d: bytes) -> None:
        if self.failure is not None:
            return
        if self.tracer is not None:
            self.tracer.received(d)
        self._received += len(d)
        if self._received > self.max_bytes:
            self.fail(ResponseTooLarge(f"the server sent more than {self.max_bytes} bytes for one command"))
            return
        self._buffer += d
        try:
            self._drain()
        except ImapError as exc:
            self.fail(exc)
        except Exception as exc:  # aioimaplib's Abort/Error on an unexpected tagged line, ...
            self.fail(ProtocolError(f"{type(exc).__name__}: {exc}"))

    def _drain(self) -> None:
        """Hand every complete line and literal in the buffer to aioimaplib's line handler."""
        buf = self._buffer
        pos = 0
        command = self.current_command
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(buf) - pos)
                if take <= 0:
                    break
                command.append_literal_data(bytes(buf[pos:pos + take]))
                self._literal_left -= take
                pos += take
                if self._literal_left:
                    break
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            line = bytes(buf[pos:end])
            pos = end + 2
            # A line kept costs more than its bytes (a bytes object, a list slot): a
            # stream of short lines must reach the bound as soon as its memory would.
            self._received += LINE_OVERHEAD
            if self._received > self.max_bytes:
                raise ResponseTooLarge(f"the server sent more than {self.max_bytes} bytes for one command")
            command = self._handle_line(line, command)
            literal = _LITERAL.search(line) if line.endswith(b"}") else None
            if literal is not None:
                size = int(literal.group(1))
                if size > self.max_bytes:
                    raise ResponseTooLarge(f"the server announced a literal of {size} bytes "
                                           f"(at most {self.max_bytes} are accepted)")
                if command is None:
                    command = aioimaplib.Command("NIL", "unused", loop=self.loop)
                command.begin_literal_data(size)
                self._literal_left = size
            elif command is None or not command.wait_data():
                command = None
        del buf[:pos]
        self.current_command = command
        if not buf and self.pending_sync_command is not None:
            self.pending_sync_command.flush()

    def _untagged_response(self, line: bytes) -> Any:
        if len(line) < 64 and (b"EXISTS" in line or b"EXPUNGE" in line or b"VANISHED" in line):
            words = line.split()
            if len(words) >= 3 and words[1].isdigit() and words[2] == b"EXISTS":
                self.exists = int(words[1])
            elif words[1:2] == [b"VANISHED"] or words[2:3] == [b"EXPUNGE"]:
                self.expunged = True
        return super()._untagged_response(line)

    def _response_done(self, line: bytes) -> None:
        super()._response_done(line)
        self._received = 0

    # --- failing ----------------------------------------------------------

    async def execute(self, command: Any, scrub: str | None = None) -> Any:
        if self.failure is not None:
            raise self.failure
        return await super().execute(command, scrub)

    async def fetch(self, message_set: str, message_parts: str, by_uid: bool = False,
                    timeout: float | None = None) -> Any:  # noqa: ASYNC109  # aioimaplib's signature
        return await self.execute(_FetchCommand(self.new_tag(), message_set, message_parts,
                                                prefix="UID" if by_uid else "", loop=self.loop,
                                                timeout=timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectError(f"connection lost: {exc}" if exc else "connection lost"), close=False)
        super().connection_lost(exc)

    def fail(self, error: ImapError, close: bool = True) -> None:
        """End the connection: every pending command fails with ``error`` now."""
        if self.failure is None:
            self.failure = error
        pending = [self.pending_sync_command, *self.pending_async_commands.values()]
        self.pending_sync_command = None
        self.pending_async_commands.clear()
        for command in pending:
            if command is not None and not command._event.is_set():
                # aioimaplib's own way of failing a command (see Command._timeout_callback).
                command._exception = self.failure
                command.close(b"", "KO")
        self._buffer = bytearray()
        if close and self.transport is not None:
            self.transport.abort()


class Client(aioimaplib.IMAP4):  # type: ignore[misc]  # untyped base
    """aioimaplib's client on a BoundedProtocol.

    ``host`` may be an address already vetted by the caller; ``server_hostname``
    is then the name TLS checks the certificate against (connecting to the
    vetted address, not resolving the name a second time, is what makes the
    check hold against a DNS answer that changes in between).
    """

    def __init__(self, host: str, port: int, timeout: float, max_bytes: int,
                 ssl_context: Any = None, server_hostname: str | None = None,
                 local_address: str | None = None) -> None:
        self._max_bytes = max_bytes
        self._server_hostname = server_hostname
        # MAILGATE_LOCAL_ADDRESSES: the source address this connection binds to.
        self._local_addr = (local_address, 0) if local_address else None
        super().__init__(host, port, timeout=timeout, ssl_context=ssl_context)

    def create_client(self, host: str, port: int, loop: Any, conn_lost_cb: Any = None,
                      ssl_context: Any = None) -> None:
        running = asyncio.get_running_loop()
        protocol = BoundedProtocol(running, conn_lost_cb, self._max_bytes)
        self.protocol = protocol
        self._client_task = running.create_task(running.create_connection(
            lambda: protocol, host, port, ssl=ssl_context,
            server_hostname=(self._server_hostname or host) if ssl_context is not None else None,
            local_addr=self._local_addr,
        ))


class ResumedClient(aioimaplib.IMAP4):  # type: ignore[misc]  # untyped base
    """aioimaplib's client over a connection that is already open, logged in and
    has a folder selected (after IDLE, which is read without aioimaplib)."""

    def __init__(self, transport: asyncio.Transport, timeout: float, max_bytes: int,
                 conn_lost_cb: Any, capabilities: Any) -> None:
        self._resume = (transport, max_bytes)
        super().__init__(timeout=timeout, conn_lost_cb=conn_lost_cb)
        self.protocol.state = aioimaplib.SELECTED
        self.protocol.capabilities = capabilities

    def create_client(self, host: str, port: int, loop: Any, conn_lost_cb: Any = None,
                      ssl_context: Any = None) -> None:
        transport, max_bytes = self._resume
        del self._resume
        protocol = BoundedProtocol(asyncio.get_running_loop(), conn_lost_cb, max_bytes)
        self.protocol = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
