"""imap-sync's bounded aioimaplib protocol, against a peer on a real socket pair.

Also the contract with aioimaplib: ``protocol.py`` overrides its response
handling and reaches into internals of version 2.0.3; if an upgrade changes
them, these tests say so before production does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from mailgate_imap_sync import parse
from mailgate_imap_sync.protocol import BoundedProtocol, ConnectError, ResponseTooLarge


@dataclass
class Peer:
    """The server end of a socket pair whose client end runs a BoundedProtocol."""

    protocol: BoundedProtocol
    sock: socket.socket

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def command(self) -> bytes:
        """The tag of the next command the client sends."""
        data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        return data.split()[0]


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    protocol = BoundedProtocol(loop, max_bytes=8 * 1024 * 1024)
    await loop.create_connection(lambda: protocol, sock=ours)
    protocol.state = aioimaplib.SELECTED
    try:
        yield Peer(protocol, theirs)
    finally:
        protocol.transport.close()
        theirs.close()


async def test_a_response_of_20000_lines_completes(peer: Peer) -> None:
    # aioimaplib 2.0.3 recursed once per line: ~1,000 lines in one read overflowed the
    # stack, the transport closed and the command never completed.
    command = asyncio.ensure_future(peer.protocol.fetch("1:*", "(UID FLAGS)", by_uid=True))
    tag = await peer.command()
    body = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n) for n in range(1, 20_001))
    await peer.send(body + tag + b" OK done\r\n")
    response = await asyncio.wait_for(command, 10)
    assert response.result == "OK"
    assert [m.uid for m in parse.parse_fetch(response.lines)] == list(range(1, 20_001))


async def test_literals_split_across_reads_are_reassembled(peer: Peer) -> None:
    command = asyncio.ensure_future(peer.protocol.fetch("7", "(UID BODY.PEEK[HEADER])", by_uid=True))
    tag = await peer.command()
    header = b"Subject: one\r\nFrom: a@b.example\r\n\r\n"
    wire = (b"* 1 FETCH (UID 7 BODY[HEADER] {%d}\r\n" % len(header) + header + b" FLAGS (\\Seen))\r\n"
            + b"* 2 FETCH (UID 8 BODY[HEADER] {0}\r\n)\r\n" + tag + b" OK done\r\n")
    for i in range(len(wire)):
        await peer.send(wire[i:i + 1])
    response = await asyncio.wait_for(command, 10)
    first, second = parse.parse_fetch(response.lines)
    assert (first.uid, first.header, first.flags) == (7, header, ["\\Seen"])
    assert (second.uid, second.header) == (8, b"")


async def test_an_announced_huge_literal_drops_the_connection_at_once(peer: Peer) -> None:
    command = asyncio.ensure_future(peer.protocol.fetch("1", "(BODY.PEEK[])", by_uid=True))
    await peer.command()
    await peer.send(b"* 1 FETCH (UID 1 BODY[] {4000000000}\r\nxxxx")
    with pytest.raises(ResponseTooLarge, match="4000000000"):
        await asyncio.wait_for(command, 10)
    assert peer.protocol.transport.is_closing()


async def test_an_endless_line_drops_the_connection_at_the_byte_bound(peer: Peer) -> None:
    command = asyncio.ensure_future(peer.protocol.fetch("1:*", "(UID FLAGS)", by_uid=True))
    await peer.command()
    sent = 0
    with pytest.raises(ResponseTooLarge):
        while not command.done():
            try:
                await peer.send(b"x" * 65536)
            except OSError:
                break
            sent += 65536
            await asyncio.sleep(0)
        await asyncio.wait_for(command, 10)
    assert sent <= 2 * peer.protocol.max_bytes


async def test_a_lost_connection_fails_the_pending_command_at_once(peer: Peer) -> None:
    command = asyncio.ensure_future(peer.protocol.fetch("1:*", "(UID FLAGS)", by_uid=True))
    await peer.command()
    await peer.send(b"* 1 FETCH (UID 1 FLAGS ())\r\n")
    peer.sock.close()
    with pytest.raises(ConnectError):
        await asyncio.wait_for(command, 5)
    # And anything asked afterwards fails the same way, without waiting.
    with pytest.raises(ConnectError):
        await asyncio.wait_for(peer.protocol.simple_command("NOOP"), 5)


async def test_announcements_during_a_command_are_noted(peer: Peer) -> None:
    command = asyncio.ensure_future(peer.protocol.simple_command("NOOP"))
    tag = await peer.command()
    await peer.send(b"* 3 EXPUNGE\r\n* 41 EXISTS\r\n" + tag + b" OK done\r\n")
    await asyncio.wait_for(command, 5)
    assert (peer.protocol.exists, peer.protocol.expunged) == (41, True)


def test_the_aioimaplib_internals_protocol_py_relies_on_are_unchanged() -> None:
    # protocol.py was written against this version; read it again before changing the pin.
    assert importlib.metadata.version("aioimaplib") == "2.0.3"
    base = aioimaplib.IMAP4ClientProtocol
    for name in ("_handle_line", "_untagged_response", "_response_done", "execute", "fetch", "new_tag"):
        assert callable(getattr(base, name)), name
    assert list(inspect.signature(base.fetch).parameters) == [
        "self", "message_set", "message_parts", "by_uid", "timeout"]
    assert list(inspect.signature(base.__init__).parameters) == ["self", "loop", "conn_lost_cb"]
    # The attributes it reads and resets.
    source = inspect.getsource(base.__init__)
    for attribute in ("current_command", "pending_sync_command", "pending_async_commands", "transport", "loop"):
        assert f"self.{attribute}" in source, attribute
    # How a command is failed and how its literal is filled.
    command_source = inspect.getsource(aioimaplib.Command)
    assert "self._exception" in command_source and "self._event" in command_source
    for name in ("begin_literal_data", "append_literal_data", "wait_literal_data", "wait_data", "close",
                 "append_to_resp"):
        assert callable(getattr(aioimaplib.Command, name)), name
    assert aioimaplib.FetchCommand.FETCH_MESSAGE_DATA_RE.pattern == rb"[0-9]+ FETCH \("
    # The client's hooks used to put a BoundedProtocol under it.
    assert "self._client_task" in inspect.getsource(aioimaplib.IMAP4._wait_connection_and_hello)
    assert list(inspect.signature(aioimaplib.IMAP4.create_client).parameters) == [
        "self", "host", "port", "loop", "conn_lost_cb", "ssl_context"]
