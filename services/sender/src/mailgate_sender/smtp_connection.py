"""One SMTP connection in its mail-transaction phase: commands out, replies in order.

aiosmtplib opens the connection (TLS or STARTTLS, EHLO, AUTH); the transport is
then handed to an ``SmtpConnection``.  aiosmtplib sends one command per round
trip, and its protocol drops a reply that arrives before the previous one was
read, so it cannot pipeline.  Here every reply is queued in order, which lets
the transaction write MAIL, RCPT and DATA at once when the server offers
PIPELINING (RFC 2920).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import NamedTuple, cast

import aiosmtplib

MAX_REPLY_BYTES = 32 * 1024  # a reply (with its continuation lines) longer than this is not SMTP
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # CR/LF in a command would inject another one
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class Command(NamedTuple):
    name: str  # what an outcome reports as the failed command: "MAIL FROM", "RCPT TO", "DATA"
    line: bytes


DATA = Command("DATA", b"DATA")
RSET = Command("RSET", b"RSET")


class ServerClosing(aiosmtplib.SMTPResponseException):
    """A 421 reply: the server is closing the connection (RFC 5321 3.8), whatever was pending."""


def data_body(raw: bytes) -> bytes:
    """What goes on the wire after DATA's 354 (RFC 5321 4.5.2); the checks spare
    the regular expressions' work for the usual message, already in CRLF and
    with no line starting with a dot."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raw = _LINE_ENDINGS.sub(b"\r\n", raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = _LEADING_DOT.sub(b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


class ReplyQueue(asyncio.Protocol):
    """Parses the server's replies into a queue, pairing each with the command it answers."""

    def __init__(self) -> None:
        self.sent: deque[str] = deque()  # commands whose reply has not arrived yet
        self.replies: deque[tuple[str, aiosmtplib.SMTPResponse]] = deque()
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
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
        message = "\n".join(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape") for line in lines)
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

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class SmtpConnection:
    """Sends commands and reads their replies in order; never more than one reply per command."""

    def __init__(self, transport: asyncio.Transport, extensions: dict[str, str], timeout: float) -> None:
        self.transport = transport
        self.extensions = extensions  # EHLO keywords, lower case, as aiosmtplib parsed them
        self.pipelining = "pipelining" in extensions
        self.bodies_sent = 0  # a message body written may have been accepted, whatever happens next
        self.at: str | None = None  # the command the exchange is at: what a failure is reported against
        self._timeout = timeout
        self._replies = ReplyQueue()
        transport.set_protocol(self._replies)

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP, timeout: float) -> SmtpConnection:
        """The connection aiosmtplib opened and authenticated; ``client`` must not be used after."""
        assert client.transport is not None, "take_over needs a connected client"
        # uvloop's TLS transport is not an asyncio.Transport subclass, but has its methods.
        return cls(cast(asyncio.Transport, client.transport), dict(client.esmtp_extensions), timeout)

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

    def send_body(self, raw: bytes) -> None:
        """The message after DATA's 354: lone CR/LF made CRLF, leading dots doubled, then the ending dot."""
        self.at = "DATA"
        self._write(data_body(raw), "DATA")
        self.bodies_sent += 1

    def send_end_of_data(self) -> None:
        """Ends a DATA the server should have refused (no recipient accepted) without a message."""
        self._write(b".\r\n", "DATA")

    def _write(self, data: bytes, *names: str) -> None:
        if not self.usable:
            raise self._replies.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._replies.sent.extend(names)
        self.transport.write(data)

    async def reply(self) -> aiosmtplib.SMTPResponse:
        """The next reply; a 421 raises ``ServerClosing`` and closes the connection."""
        replies = self._replies
        if replies.replies:
            self.at = replies.replies[0][0]
        elif replies.sent:
            self.at = replies.sent[0]
        while not replies.replies:
            if replies.error is not None:
                raise replies.error
            replies.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._timeout):
                    await replies.waiter
            except TimeoutError:
                # The reply may still come, and would then answer the wrong command.
                self.close()
                raise aiosmtplib.SMTPReadTimeoutError(f"Timed out waiting for the reply to {self.at}") from None
            finally:
                replies.waiter = None
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
        if self.usable:
            self.transport.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self._replies.fail(aiosmtplib.SMTPServerDisconnected("Connection closed"))
        if not self.transport.is_closing():
            self.transport.close()
