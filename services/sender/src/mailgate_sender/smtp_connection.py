"""One SMTP connection in its mail-transaction phase: commands out, replies in order.

aiosmtplib opens the connection (TLS or STARTTLS, EHLO, AUTH); the transport is
then handed to an ``SmtpConnection``.  aiosmtplib sends one command per round
trip, and its protocol drops a reply that arrives before the previous one was
read, so it cannot pipeline.  Here every reply is queued in order, which lets
the transaction write MAIL, RCPT and DATA at once when the server offers
PIPELINING (RFC 2920).

Every wait is bounded in total: a reply by its deadline however slowly its
bytes trickle in, the message body by its progress (each chunk must leave our
buffers within the timeout).  A body that did not go out whole is never
flushed later: its connection is aborted, so the server cannot complete a
message the sender has given up on (``transport.close()`` would still send the
buffered rest, final dot included).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple, cast

import aiosmtplib

from mailgate_common.text import clean_text
from mailgate_sender.outcome import OutcomeUnknown

MAX_REPLY_BYTES = 32 * 1024  # a reply (with its continuation lines) longer than this is not SMTP
# Characters of a server's reply kept: enough for any real explanation, and
# bounded, as it is stored with the attempt and sent on in events.
REPLY_TEXT_LIMIT = 4096
# Bodies up to this size are written in one piece; larger ones are streamed in
# pieces of about this size, so no copy of the whole message is ever made.
BODY_CHUNK = 256 * 1024
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # CR/LF in a command would inject another one
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_DOT_AFTER_LF = re.compile(rb"\n\.")


class Command(NamedTuple):
    name: str  # what an outcome reports as the failed command: "MAIL FROM", "RCPT TO", "DATA"
    line: bytes


DATA = Command("DATA", b"DATA")
RSET = Command("RSET", b"RSET")


class ServerClosing(aiosmtplib.SMTPResponseException):
    """A 421 reply: the server is closing the connection (RFC 5321 3.8), whatever was pending."""


class Abandoned(aiosmtplib.SMTPException):
    """The message was not sent: the sender no longer holds it (another may send it)."""


def _normalized(raw: bytes) -> bytes:
    # The checks spare the regular expression's work for the usual message, already in CRLF.
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _LINE_ENDINGS.sub(b"\r\n", raw)
    return raw


def data_body(raw: bytes) -> bytes:
    """What goes on the wire after DATA's 354 (RFC 5321 4.5.2): lone CR/LF made
    CRLF, leading dots doubled, then the ending dot."""
    raw = _normalized(raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = _LEADING_DOT.sub(b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


def data_chunks(raw: bytes, size: int = BODY_CHUNK) -> Iterator[bytes]:
    """``data_body(raw)`` in pieces of about ``size`` bytes, without a copy of the whole.

    Pieces are cut after a line feed where there is one, and never between CR
    and LF, so each is normalised and dot-stuffed on its own with the same
    result; a piece that does not start a line only has dots after its line feeds doubled.
    """
    if len(raw) <= size:
        yield data_body(raw)
        return
    start, end_of_raw = 0, len(raw)
    line_start = True
    tail = b""
    while start < end_of_raw:
        end = min(start + size, end_of_raw)
        if end < end_of_raw:
            newline = raw.rfind(b"\n", start, end)
            if newline >= 0:
                end = newline + 1
            elif raw[end - 1] == 0x0D:  # keep CR and LF together
                if end - 1 > start:
                    end -= 1
                else:
                    while end < end_of_raw and raw[end - 1] == 0x0D:
                        end += 1
        piece = _normalized(raw[start:end])
        if b"." in piece:
            if line_start:
                piece = _LEADING_DOT.sub(b"..", piece)
            elif b"\n." in piece:
                piece = _DOT_AFTER_LF.sub(b"\n..", piece)
        line_start = piece.endswith(b"\n")
        tail = piece[-2:]
        yield piece
        start = end
    yield b".\r\n" if tail == b"\r\n" else b"\r\n.\r\n"


class ReplyQueue(asyncio.Protocol):
    """Parses the server's replies into a queue, pairing each with the command it answers;
    tells the writer when the transport wants it to wait (flow control)."""

    def __init__(self) -> None:
        self.sent: deque[str] = deque()  # commands whose reply has not arrived yet
        self.replies: deque[tuple[str, aiosmtplib.SMTPResponse]] = deque()
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False  # the transport's buffer is full: write no more until resumed
        self._buffer = bytearray()
        self._lines: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if self.error is not None:  # after a broken reply, nothing that follows can be paired
            return
        self._buffer += data
        while self.error is None and (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._lines.append(line)
            if line[3:4] != b"-":  # "250 ok" or "250" ends a reply, "250-..." continues it
                self._reply_complete()
        if len(self._buffer) + sum(map(len, self._lines)) > MAX_REPLY_BYTES:
            self.fail(aiosmtplib.SMTPResponseException(-1, "Reply too long"))
        self._wake()

    def _reply_complete(self) -> None:
        lines, self._lines = self._lines, []
        try:
            code = int(lines[0][:3])
        except ValueError:
            self.fail(aiosmtplib.SMTPResponseException(-1, f"Malformed reply: {lines[0]!r}"))
            return
        # The one place the server's words are read: whatever bytes it sent
        # (Latin-1, NUL) become text that can be stored and sent on.
        text = (lines[0][4:].strip(b" \t\r\n") if len(lines) == 1
                else b"\n".join(line[4:].strip(b" \t\r\n") for line in lines))
        message = clean_text(text, REPLY_TEXT_LIMIT)
        if not self.sent:
            # Typically "421 idle too long" before the server hangs up: the
            # connection is not reusable, and the reply must not be taken as
            # the answer to our next command.
            self.fail(aiosmtplib.SMTPServerDisconnected(f"Unsolicited reply: {code} {message}"))
            return
        self.replies.append((self.sent.popleft(), aiosmtplib.SMTPResponse(code, message)))

    def eof_received(self) -> bool:
        self.fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self.fail(error)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        """Until something happens: data read, writing resumed, or the connection failed."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class SmtpConnection:
    """Sends commands and reads their replies in order; never more than one reply per command."""

    def __init__(self, transport: asyncio.Transport, extensions: dict[str, str], timeout: float,
                 data_timeout: float) -> None:
        self.transport = transport
        self.extensions = extensions  # EHLO keywords, lower case, as aiosmtplib parsed them
        self.pipelining = "pipelining" in extensions
        # Bodies whose first byte was written: such a message may have been
        # accepted whatever happens next, so it is never sent again on a fresh connection.
        self.bodies_sent = 0
        self.authenticated = False  # it logged in (a relay without AUTH is used without)
        self.at: str | None = None  # the command the exchange is at: what a failure is reported against
        self.timeout = timeout  # for each reply, and for each piece of a message to leave
        self.data_timeout = data_timeout  # for the verdict on a message
        self._body_unfinished = False  # part of a body is in our buffers: never flush it
        self._replies = ReplyQueue()
        transport.set_protocol(self._replies)

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP, timeout: float, data_timeout: float) -> SmtpConnection:
        """The connection aiosmtplib opened and authenticated; ``client`` must not be used after."""
        assert client.transport is not None, "take_over needs a connected client"
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods.
        return cls(cast(asyncio.Transport, client.transport), dict(client.esmtp_extensions), timeout, data_timeout)

    @property
    def usable(self) -> bool:
        return self._replies.error is None and not self.transport.is_closing()

    def supports(self, extension: str) -> bool:
        return extension in self.extensions

    def send(self, *commands: Command) -> None:
        """Writes the commands in one go; each gets its reply from ``reply()``, in order."""
        for command in commands:
            if _CONTROL.search(command.line):
                raise ValueError(f"{command.name} contains a control character")
        self.at = commands[0].name
        self._write(b"".join(command.line + b"\r\n" for command in commands), *(c.name for c in commands))

    async def send_body(self, raw: bytes, may_send: Callable[[], bool] = lambda: True) -> None:
        """The message after DATA's 354, streamed with flow control; returns once all
        of it, final dot included, has left our buffers.

        ``may_send`` is asked right before the first byte: past that point the
        server may accept the message whatever happens, so an exchange whose
        message is no longer ours (False) is abandoned here.  If the body cannot
        be written whole (the server stops reading for ``timeout``, the
        connection breaks, the task is cancelled), the connection is aborted.
        """
        self.at = "DATA"
        if not may_send():
            raise Abandoned("the claim on the message was lost before its body was sent")
        if not self.usable:
            raise self._replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.bodies_sent += 1
        self._body_unfinished = True
        self._replies.sent.append("DATA")
        try:
            if len(raw) <= BODY_CHUNK:  # the usual message: one write, no generator
                self.transport.write(data_body(raw))
            else:
                for chunk in data_chunks(raw):
                    if not self.usable:
                        raise self._replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
                    self.transport.write(chunk)
                    if self._replies.paused:
                        await self._drained("writing the message")
            await self._flushed()
        except BaseException:
            self.abort()
            raise
        self._body_unfinished = False

    async def _drained(self, doing: str) -> None:
        """Until the transport takes more; a server that reads nothing for ``timeout`` fails it."""
        replies = self._replies
        try:
            async with asyncio.timeout(self.timeout):
                while replies.paused:
                    if replies.error is not None:
                        raise replies.error
                    await replies.wait()
        except TimeoutError:
            raise aiosmtplib.SMTPTimeoutError(f"Timed out {doing}: the server stopped reading") from None

    async def _flushed(self) -> None:
        """Until our buffers are empty: the whole message is on its way to the server."""
        if not self.transport.get_write_buffer_size():
            return  # the usual case: a small message went out in the write itself
        # Paused until nothing is left (the default low-water mark is a quarter of the high).
        self.transport.set_write_buffer_limits(high=0)
        try:
            await self._drained("sending the end of the message")
        finally:
            if not self.transport.is_closing():
                self.transport.set_write_buffer_limits()

    def send_end_of_data(self) -> None:
        """Ends a DATA the server should have refused (no recipient accepted) without a message."""
        self._write(b".\r\n", "DATA")

    def _write(self, data: bytes, *names: str) -> None:
        if not self.usable:
            raise self._replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._replies.sent.extend(names)
        self.transport.write(data)

    async def reply(self) -> aiosmtplib.SMTPResponse:
        """The next reply, within ``timeout`` in total however slowly its bytes
        arrive; a 421 raises ``ServerClosing`` and closes the connection."""
        return await self._reply(self.timeout)

    async def verdict(self) -> aiosmtplib.SMTPResponse:
        """The reply to a message ``send_body`` wrote, within ``data_timeout``.  Without
        one (no answer in time, the connection lost, a garbled reply) the server may
        have accepted the message or not: ``OutcomeUnknown``.  A 421 is a verdict (not accepted)."""
        try:
            return await self._reply(self.data_timeout)
        except ServerClosing:
            raise
        except aiosmtplib.SMTPException as exc:
            raise OutcomeUnknown(str(exc)) from exc

    async def _reply(self, seconds: float) -> aiosmtplib.SMTPResponse:
        replies = self._replies
        if replies.replies:
            self.at = replies.replies[0][0]
        elif replies.sent:
            self.at = replies.sent[0]
        try:
            if not replies.replies:  # else already here (pipelined replies come in one read)
                async with asyncio.timeout(seconds):
                    while not replies.replies:
                        if replies.error is not None:
                            raise replies.error
                        await replies.wait()
        except TimeoutError:
            # The reply may still come, and would then answer the wrong command.
            self.close()
            raise aiosmtplib.SMTPReadTimeoutError(f"Timed out waiting for the reply to {self.at}") from None
        _, reply = replies.replies.popleft()
        if reply.code == 421:
            self.close()
            raise ServerClosing(reply.code, reply.message)
        return reply

    async def reset(self) -> bool:
        """RSET after a transaction that did not end in a sent message; False if the connection is done."""
        try:
            self.send(RSET)
            ok = (await self.reply()).code == 250
        except (aiosmtplib.SMTPException, OSError):
            ok = False
        if not ok:
            self.close()
        return ok

    def quit(self) -> None:
        """Says goodbye without waiting for the answer (closing flushes the write first)."""
        if self.usable and not self._body_unfinished:
            self.transport.write(b"QUIT\r\n")
        self.close()

    def interrupt(self, reason: str) -> None:
        """Ends whatever the connection's user is waiting for (a reply, room to write) with an error."""
        self._replies.fail(aiosmtplib.SMTPServerDisconnected(reason))

    def close(self) -> None:
        """Closes after flushing what is buffered, unless that is part of a message: then aborts."""
        if self._body_unfinished:
            self.abort()
            return
        self._replies.fail(aiosmtplib.SMTPServerDisconnected("Connection closed"))
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Closes at once, dropping whatever is buffered: a message cut short never completes."""
        self._replies.fail(aiosmtplib.SMTPServerDisconnected("Connection aborted"))
        self.transport.abort()
