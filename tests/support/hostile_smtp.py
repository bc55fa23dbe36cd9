"""A real SMTP server on a raw socket that misbehaves on purpose, scripted per recipient.

    latin1-*@…  -> RCPT refused with a reply in ISO-8859-1 ("Empfänger unbekannt")
    nul-*@…     -> RCPT refused with a reply holding a NUL byte
    trickle-*@… -> the RCPT reply sent one byte at a time, 0.1 s apart (about 10 s in all)
    stall-*@…   -> the first time: after 354, reads 64 KiB of the message, then
                   stops reading for ``stall_seconds`` (a full receive buffer),
                   then reads on; a message that still arrives whole is kept
Everything else is accepted.  The server offers neither AUTH nor PIPELINING,
and keeps of each message only its size and SHA-256 (so a test can push
hundreds of megabytes through it): ``count(rcpt)`` says how many complete
messages (final dot received) reached each recipient.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

LATIN1_REPLY = b"550 5.1.1 Empf\xe4nger unbekannt"
NUL_REPLY = b"550 5.1.1 Unknown\x00user"
TRICKLED_REPLY = b"250 2.1.5 Recipient ok, " + b"slowly " * 14
STALL_AFTER = 64 * 1024
_END = b"\r\n.\r\n"


@dataclass
class Arrived:
    rcpts: list[str]
    size: int
    sha256: str


@dataclass
class HostileSmtp:
    port: int
    stall_seconds: float = 10.0
    messages: list[Arrived] = field(default_factory=list)
    offered: Counter[str] = field(default_factory=Counter)
    stalled: list[str] = field(default_factory=list)  # recipients whose message reading stopped once
    stalls_over: int = 0  # stalled sessions that read on afterwards, to the message's end or the connection's
    trickles_cut: int = 0  # trickled replies the client hung up on before the end
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", self.port), self._loop).result(5)

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def count(self, rcpt: str) -> int:
        with self.lock:
            return sum(rcpt.lower() in (r.lower() for r in m.rcpts) for m in self.messages)

    def arrived(self, rcpt: str) -> list[Arrived]:
        with self.lock:
            return [m for m in self.messages if rcpt.lower() in (r.lower() for r in m.rcpts)]

    # --- the server ---------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hostile.test ESMTP\r\n")
        rcpts: list[str] = []
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-hostile.test\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif verb == b"MAIL":
                rcpts = []
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                address = line.split(b":", 1)[1].strip().strip(b"<>").decode()
                await self._rcpt(address, rcpts, writer)
            elif verb == b"DATA":
                if not rcpts:
                    writer.write(b"554 5.5.1 No valid recipients\r\n")
                    continue
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                if not await self._message(reader, writer, rcpts):
                    return  # the client went away mid-message
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:  # RSET, NOOP
                writer.write(b"250 2.0.0 Ok\r\n")
            await writer.drain()

    async def _rcpt(self, address: str, rcpts: list[str], writer: asyncio.StreamWriter) -> None:
        local = address.split("@", 1)[0].lower()
        with self.lock:
            self.offered[address.lower()] += 1
        if local.startswith("latin1-"):
            writer.write(LATIN1_REPLY + b"\r\n")
        elif local.startswith("nul-"):
            writer.write(NUL_REPLY + b"\r\n")
        elif local.startswith("trickle-"):
            try:
                for byte in TRICKLED_REPLY + b"\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)
            except ConnectionError:
                with self.lock:
                    self.trickles_cut += 1
                raise
            rcpts.append(address)
        else:
            writer.write(b"250 2.1.5 Ok\r\n")
            rcpts.append(address)

    async def _message(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rcpts: list[str]) -> bool:
        """Reads a message to its final dot; False if the connection ended before it."""
        stall = any(r.split("@")[0].lower().startswith("stall-") for r in rcpts)
        with self.lock:
            stall = stall and not any(r.lower() in self.stalled for r in rcpts)
            if stall:
                self.stalled.extend(r.lower() for r in rcpts)
        if stall:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        try:
            return await self._read_message(reader, rcpts, stall)
        finally:
            if stall:
                with self.lock:
                    self.stalls_over += 1

    async def _read_message(self, reader: asyncio.StreamReader, rcpts: list[str], stall: bool) -> bool:
        digest = hashlib.sha256()
        size = 0
        tail = b""
        while True:
            if stall and size >= STALL_AFTER:
                stall = False
                await asyncio.sleep(self.stall_seconds)  # reads nothing: the client's writes back up
            try:
                chunk = await reader.read(1 << 20)
            except ConnectionError:
                return False
            if not chunk:
                return False
            data = tail + chunk
            if size == 0 and data.startswith(b".\r\n"):
                end = 0
            else:
                found = data.find(_END)
                end = found + 2 if found >= 0 else -1
            if end >= 0:
                digest.update(data[:end])
                size += end
                with self.lock:
                    self.messages.append(Arrived(list(rcpts), size, digest.hexdigest()))
                return True
            keep = min(len(data), len(_END) - 1)
            digest.update(data[: len(data) - keep])
            size += len(data) - keep
            tail = data[len(data) - keep:]

