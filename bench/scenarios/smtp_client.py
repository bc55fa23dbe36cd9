"""The sender's SMTP client alone into Postfix smtp-sink, vs aiosmtplib's own sendmail
over as many reused connections: what pipelining MAIL, RCPT and DATA saves."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiosmtplib
import uvloop

from bench.context import Bench, Row
from bench.peers import SmtpSink
from mailgate_sender.smtp_client import SmtpPool, SmtpServer
from tests.support.stack import free_port

RAW = (b"From: bench@bench.test\r\nTo: rcpt@example.org\r\nSubject: client\r\n"
       b"Message-ID: <client@bench.test>\r\nMIME-Version: 1.0\r\n\r\n" + b"x" * 1000 + b"\r\n")
CONNECTIONS = 20


async def _measure(send: Callable[[], Awaitable[None]], messages: int) -> tuple[float, float]:
    """(messages/s, CPU µs per message) for ``messages`` sends by CONNECTIONS workers."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    share = messages // CONNECTIONS
    await asyncio.gather(*(worker(2) for _ in range(CONNECTIONS)))  # connections opened, not counted
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(share) for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    return share * CONNECTIONS / elapsed, (time.process_time() - cpu) / (share * CONNECTIONS) * 1e6


async def _ours(port: int, messages: int) -> tuple[float, float]:
    pool = SmtpPool(timeout=30.0, max_idle_per_server=CONNECTIONS, helo_name="bench.test")
    server = SmtpServer("127.0.0.1", port, secure=False, user=None, password=None)

    async def send() -> None:
        outcome = await pool.deliver(server, "bench@bench.test", ["rcpt@example.org"], RAW)
        assert outcome.kind == "sent", outcome

    try:
        return await _measure(send, messages)
    finally:
        pool.close()


async def _aiosmtplib(port: int, messages: int) -> tuple[float, float]:
    idle: list[aiosmtplib.SMTP] = []

    async def send() -> None:
        client = idle.pop() if idle else aiosmtplib.SMTP(hostname="127.0.0.1", port=port,
                                                         local_hostname="bench.test", start_tls=False)
        if not client.is_connected:
            await client.connect()
        await client.sendmail("bench@bench.test", ["rcpt@example.org"], RAW)
        idle.append(client)

    try:
        return await _measure(send, messages)
    finally:
        for client in idle:
            client.close()


def run(bench: Bench, messages: int = 6000, rounds: int = 3) -> None:
    port = free_port()
    ours: list[tuple[float, float]] = []
    reference: list[tuple[float, float]] = []
    with SmtpSink(port):
        for _ in range(rounds):  # alternated, so a change in the VM's speed hits both alike
            ours.append(uvloop.run(_ours(port, messages)))
            reference.append(uvloop.run(_aiosmtplib(port, messages)))
    bench.commands.append(f"smtp-sink -c 127.0.0.1:{port} 1024; {rounds} × {messages} messages "
                          f"over {CONNECTIONS} connections, median")
    for index, (figure, unit, higher) in enumerate([("messages/s", "msg/s", True),
                                                    ("CPU per message", "µs", False)]):
        bench.add(Row("Sender SMTP client", f"{figure}, {CONNECTIONS} reused connections -> smtp-sink",
                      statistics.median(r[index] for r in ours), unit,
                      "aiosmtplib sendmail, same connections", statistics.median(r[index] for r in reference),
                      higher_is_better=higher))
