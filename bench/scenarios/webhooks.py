"""Webhooks: events/s delivered to a local receiver (vs the receiver's own ceiling
under wrk), and what one slow endpoint does to a fast one."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.context import Bench, Row
from bench.peers import wrk_post
from mailgate_common import events
from mailgate_common.bus import Bus
from tests.support.stack import free_port, wait_for

PUBLISH_WINDOW = 100


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: bursts of new connections overflowed it.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The webhooks service closing a kept-alive connection mid-read is normal
        # here; socketserver would print a traceback for each one.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    """Counts POSTs; ``delay`` seconds before answering makes it a slow endpoint."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: with Nagle on, the body waits for
            # the client's delayed ACK (40 ms), capping every connection at ~25 req/s.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                if delay:
                    time.sleep(delay)
                with receiver.lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.server = _Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _publish(amqp_url: str, account: str, count: int) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    envelope = events.Envelope(from_="a@bench.test", to=["b@example.org"])
    # Confirms pipelined (PUBLISH_WINDOW in flight): one publish at a time waits ~2 ms
    # per broker confirm and would measure the publisher, not the webhooks service.
    for start in range(0, count, PUBLISH_WINDOW):
        await asyncio.gather(*(
            bus.publish(events.MessageSent(account=account, queue_id=f"wh{i}", message_id=f"<{i}@bench>",
                                           response="250 ok", envelope=envelope))
            for i in range(start, min(count, start + PUBLISH_WINDOW))))
    await bus.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _deliver(bench: Bench, account: str, receiver: Receiver, count: int) -> tuple[float, float]:
    """(events/s actually received by ``receiver``, webhooks-process CPU ms per event)."""
    process = bench.stack.services["webhooks"].proc
    assert process is not None
    cpu_before = _cpu_seconds(process.pid)
    start_count = receiver.count
    started = time.perf_counter()
    asyncio.run(_publish(bench.stack.amqp_url, account, count))
    wait_for(lambda: receiver.count - start_count >= count, timeout=300, interval=0.05,
             message="all webhooks delivered")
    elapsed = time.perf_counter() - started
    return count / elapsed, (_cpu_seconds(process.pid) - cpu_before) * 1000 / count


def run(bench: Bench, count: int = 3000) -> None:
    account = bench.create_account(smtp_port=9)
    fast, slow = Receiver(), Receiver(delay=1.0)
    created: list[str] = []
    try:
        with bench.api() as api:
            response = api.post("/v1/webhooks", json={"url": fast.url, "events": ["messageSent"], "account": account})
            response.raise_for_status()
            created.append(response.json()["id"])
        alone, cpu_ms = _deliver(bench, account, fast, count)
        ceiling = wrk_post(fast.url, b'{"event":"messageSent"}', {"content-type": "application/json"}, 32, 5)
        bench.commands.append(ceiling.command)
        bench.add(Row("Webhooks", "events/s delivered to one local receiver", alone, "ev/s",
                      "the receiver's own ceiling (wrk, 32 connections)", ceiling.requests_per_s))
        # Ratio = the share of one core the service used: near 1 means CPU-bound, far
        # below means it waits on something (the database, a pacing bug).
        bench.add(Row("Webhooks", "webhooks process CPU per event delivered", cpu_ms, "ms",
                      "wall-clock time per event at that rate", 1000 / alone, higher_is_better=False))
        with bench.api() as api:
            response = api.post("/v1/webhooks", json={"url": slow.url, "events": ["messageSent"], "account": account})
            response.raise_for_status()
            created.append(response.json()["id"])
        beside_slow, _ = _deliver(bench, account, fast, count // 3)
        bench.add(Row("Webhooks", "fast endpoint events/s while a 1 s-slow endpoint gets the same events",
                      beside_slow, "ev/s", "the same endpoint alone", alone))
    finally:
        with bench.api() as api:
            for endpoint in created:
                api.delete(f"/v1/webhooks/{endpoint}")
            api.delete(f"/v1/account/{account}")
        fast.stop()
        slow.stop()
