"""Webhooks: events/s delivered to a local receiver (vs the receiver's own ceiling
under wrk), and what one slow endpoint does to a fast one."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.context import Bench, Row
from bench.peers import wrk_post
from mailgate_common import events
from mailgate_common.bus import Bus
from tests.support.stack import free_port, wait_for


class Receiver:
    """Counts POSTs; ``delay`` seconds before answering makes it a slow endpoint."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _publish(amqp_url: str, account: str, count: int) -> None:
    bus = Bus(amqp_url)
    await bus.connect()
    envelope = events.Envelope(from_="a@bench.test", to=["b@example.org"])
    for i in range(count):
        await bus.publish(events.MessageSent(account=account, queue_id=f"wh{i}", message_id=f"<{i}@bench>",
                                             response="250 ok", envelope=envelope))
    await bus.close()


def _deliver(bench: Bench, account: str, receiver: Receiver, count: int) -> float:
    start_count = receiver.count
    started = time.perf_counter()
    asyncio.run(_publish(bench.stack.amqp_url, account, count))
    wait_for(lambda: receiver.count - start_count >= count, timeout=300, interval=0.2,
             message="all webhooks delivered")
    return count / (time.perf_counter() - started)


def run(bench: Bench, count: int = 3000) -> None:
    account = bench.create_account(smtp_port=9)
    fast, slow = Receiver(), Receiver(delay=1.0)
    created: list[str] = []
    try:
        with bench.api() as api:
            response = api.post("/v1/webhooks", json={"url": fast.url, "events": ["messageSent"], "account": account})
            response.raise_for_status()
            created.append(response.json()["id"])
        alone = _deliver(bench, account, fast, count)
        ceiling = wrk_post(fast.url, b'{"event":"messageSent"}', {"content-type": "application/json"}, 32, 5)
        bench.commands.append(ceiling.command)
        bench.add(Row("Webhooks", "events/s delivered to one local receiver", alone, "ev/s",
                      "the receiver's own ceiling (wrk, 32 connections)", ceiling.requests_per_s))
        with bench.api() as api:
            response = api.post("/v1/webhooks", json={"url": slow.url, "events": ["messageSent"], "account": account})
            response.raise_for_status()
            created.append(response.json()["id"])
        beside_slow = _deliver(bench, account, fast, count // 3)
        bench.add(Row("Webhooks", "fast endpoint events/s while a 1 s-slow endpoint gets the same events",
                      beside_slow, "ev/s", "the same endpoint alone", alone))
    finally:
        with bench.api() as api:
            for endpoint in created:
                api.delete(f"/v1/webhooks/{endpoint}")
            api.delete(f"/v1/account/{account}")
        fast.stop()
        slow.stop()
