"""A real IMAP server on a real socket that misbehaves on purpose.

It greets, takes any LOGIN, answers CAPABILITY, ENABLE, LIST and SELECT like
a small server with one message, and then answers the first ``UID FETCH`` of
each connection with one of its ``attacks``:

* ``huge_literal`` - announces a literal of 4,000,000,000 bytes and streams it;
* ``endless`` - streams untagged FETCH lines for ever, never completing.

It records per connection how many bytes it sent and whether the client
closed the connection (``sessions``): a client that bounds what it accepts
closes it itself, long before the server stops (``stop_after`` bytes).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

CAPABILITIES = b"IMAP4rev1 IDLE LITERAL+ ENABLE"
CHUNK = 64 * 1024


@dataclass
class Session:
    sent: int = 0
    closed_by_client: bool = False
    done: bool = False


class HostileImap:
    def __init__(self, port: int, attack: str, stop_after: int = 512 * 1024 * 1024) -> None:
        self.port = port
        self.attack = attack
        self.stop_after = stop_after
        self.sessions: list[Session] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session()
        self.sessions.append(session)
        try:
            writer.write(b"* OK [CAPABILITY " + CAPABILITIES + b"] hostile ready\r\n")
            while line := await reader.readline():
                tag, _, rest = line.strip().partition(b" ")
                command = rest.split(b" ", 1)[0].upper()
                if command == b"UID" and rest.split()[1].upper() == b"FETCH":
                    await self._attack(writer, session)
                    return
                writer.write(self._answer(tag, command))
                await writer.drain()
        except (ConnectionError, OSError):
            session.closed_by_client = True
        finally:
            session.done = True
            writer.close()

    @staticmethod
    def _answer(tag: bytes, command: bytes) -> bytes:
        if command == b"CAPABILITY":
            return b"* CAPABILITY " + CAPABILITIES + b"\r\n" + tag + b" OK done\r\n"
        if command == b"LIST":
            return b'* LIST (\\HasNoChildren) "/" INBOX\r\n' + tag + b" OK done\r\n"
        if command == b"SELECT":
            return (b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n"
                    + tag + b" OK [READ-WRITE] done\r\n")
        if command == b"LOGOUT":
            return b"* BYE\r\n" + tag + b" OK bye\r\n"
        return tag + b" OK done\r\n"

    async def _attack(self, writer: asyncio.StreamWriter, session: Session) -> None:
        if self.attack == "huge_literal":
            writer.write(b"* 1 FETCH (UID 1 FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {4000000000}\r\n")
            filler = b"x" * CHUNK
        else:
            filler = b"".join(b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n" for _ in range(CHUNK // 32))
        while session.sent < self.stop_after:
            writer.write(filler)
            session.sent += len(filler)
            await writer.drain()
