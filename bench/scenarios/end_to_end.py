"""End to end at a fixed 100 msg/s: submit -> accepted by the SMTP server, and
submit -> messageSent at a webhook receiver; vs a direct SMTP send to the same server.

The SMTP server and the webhook receiver run in a process of their own: in the
load generator's process they competed with it for one GIL, and a starved
generator sends requests late and reads answers late, which showed as seconds
of "latency" that no service had caused."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import time
from multiprocessing.connection import Connection
from typing import Any

import aiosmtplib
import httpx

from bench.context import Bench, Row
from bench.peers import open_loop, percentile
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver


async def _direct_sends(port: int, count: int, rate: float) -> list[float]:
    """Reference: a client sending straight to the server, one connection per message."""
    latencies: list[float] = []
    message = b"From: a@bench.test\r\nTo: b@example.org\r\nSubject: ref\r\n\r\nbody\r\n"

    async def one() -> None:
        t0 = time.perf_counter()
        await aiosmtplib.send(message, sender="a@bench.test", recipients=["b@example.org"],
                              hostname="127.0.0.1", port=port, username="ref", password="smtp-password",
                              start_tls=False)
        latencies.append((time.perf_counter() - t0) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


def _peers(sink_port: int, receiver_port: int, control: Connection) -> None:
    """Child process: the SMTP server and webhook receiver, answering the parent's questions."""
    sink = SmtpSink(sink_port)
    sink.start()
    receiver = WebhookReceiver(receiver_port)
    receiver.start()
    control.send("ready")
    try:
        while True:
            question = control.recv()
            if question == "hooked":
                control.send({h.json["data"]["queueId"] for h in receiver.received("messageSent")})
            elif question == "results":
                accepted = [(str(r.message["Subject"]), r.at) for r in list(sink.handler.messages)]
                hooks = [(h.json["data"]["queueId"], h.at) for h in receiver.received("messageSent")]
                control.send((accepted, hooks))
            else:
                return
    finally:
        sink.stop()
        receiver.stop()


class Peers:
    def __init__(self) -> None:
        self.sink_port, self.receiver_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.receiver_port}/hooks"
        self._control, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_peers, args=(self.sink_port, self.receiver_port, child), daemon=True)

    def start(self) -> None:
        self._process.start()
        if not self._control.poll(30):
            raise RuntimeError("bench peers did not start")
        self._control.recv()

    def ask(self, question: str) -> Any:
        self._control.send(question)
        return self._control.recv()

    def stop(self) -> None:
        try:
            self._control.send("stop")
        except OSError:
            pass
        self._process.join(10)


def _idle(bench: Bench) -> bool:
    """No event waiting in any queue: earlier scenarios (a drain leaves tens of
    thousands of events for the webhooks service) no longer compete for the CPU."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", bench.stack.vhost, "messages"],
                         capture_output=True, text=True, check=True).stdout
    return all(int(n) == 0 for n in out.split() if n.isdigit())


def run(bench: Bench, rate: float = 100, seconds: int = 10) -> None:
    wait_for(lambda: _idle(bench), timeout=300, interval=1, message="an idle stack")
    peers = Peers()
    peers.start()
    try:
        account = bench.create_account(peers.sink_port, auth=True)
        with bench.api() as api:
            settings = {"webhooks": peers.url, "webhookEvents": ["messageSent"]}
            api.post("/v1/settings", json=settings).raise_for_status()
        count = int(rate * seconds)
        bodies = [json.dumps({"to": [{"address": f"e2e{i}@example.org"}], "subject": f"e2e {i}",
                              "text": "latency"}).encode() for i in range(count)]
        result = asyncio.run(open_loop(f"{bench.stack.api_url}/v1/account/{account}/submit", bodies, rate,
                                       bench.headers))
        wait_for(lambda: peers.ask("hooked") >= set(result.started_at), timeout=120, interval=0.5,
                 message="a messageSent webhook for every message")
        accepted, received_hooks = peers.ask("results")
        by_message = dict(accepted)
        accepted_ms: list[float] = []
        hook_ms: list[float] = []
        hooks = dict(received_hooks)
        submitted = {q: t for q, t in result.started_at.items()}
        subjects = {}
        with bench.api() as api:
            for queue_id in submitted:
                subjects[queue_id] = api.get(f"/v1/outbox/{queue_id}").json()["subject"]
        for queue_id, t0 in submitted.items():
            if subjects.get(queue_id) in by_message:
                accepted_ms.append((by_message[subjects[queue_id]] - t0) * 1000)
            if queue_id in hooks:
                hook_ms.append((hooks[queue_id] - t0) * 1000)
        reference = asyncio.run(_direct_sends(peers.sink_port, min(count, 500), rate))
        for q, target_ in ((50, "< 50 ms"), (95, ""), (99, "< 250 ms")):
            bench.add(Row("End to end", f"submit -> SMTP accepted p{q} at {rate:.0f}/s",
                          percentile(accepted_ms, q), "ms", "direct aiosmtplib send, same server",
                          percentile(reference, q), higher_is_better=False, target=target_))
        for q in (50, 95, 99):
            bench.add(Row("End to end", f"submit -> messageSent webhook p{q}", percentile(hook_ms, q), "ms",
                          "direct aiosmtplib send, same server", percentile(reference, q),
                          higher_is_better=False))
    finally:
        peers.stop()
        try:
            with bench.api() as api:
                api.post("/v1/settings", json={"webhooks": ""})
        except httpx.HTTPError:
            pass
