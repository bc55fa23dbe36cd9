"""End to end at a fixed 100 msg/s: submit -> accepted by the SMTP server, and
submit -> messageSent at a webhook receiver; vs a direct SMTP send to the same server."""

from __future__ import annotations

import asyncio
import json
import time

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


def run(bench: Bench, rate: float = 100, seconds: int = 10) -> None:
    sink = SmtpSink(free_port())
    sink.start()
    receiver = WebhookReceiver(free_port())
    receiver.start()
    try:
        account = bench.create_account(sink.port, auth=True)
        with bench.api() as api:
            settings = {"webhooks": receiver.url, "webhookEvents": ["messageSent"]}
            api.post("/v1/settings", json=settings).raise_for_status()
        count = int(rate * seconds)
        bodies = [json.dumps({"to": [{"address": f"e2e{i}@example.org"}], "subject": f"e2e {i}",
                              "text": "latency"}).encode() for i in range(count)]
        result = asyncio.run(open_loop(f"{bench.stack.api_url}/v1/account/{account}/submit", bodies, rate,
                                       bench.headers))
        wait_for(lambda: len(receiver.received("messageSent")) >= result.ok, timeout=120,
                 message="all messageSent webhooks")
        by_message = {}
        for received in list(sink.handler.messages):
            by_message[str(received.message["Subject"])] = received.at
        accepted_ms: list[float] = []
        hook_ms: list[float] = []
        hooks = {h.json["data"]["queueId"]: h.at for h in receiver.received("messageSent")}
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
        reference = asyncio.run(_direct_sends(sink.port, min(count, 500), rate))
        for q, target_ in ((50, "< 50 ms"), (95, ""), (99, "< 250 ms")):
            bench.add(Row("End to end", f"submit -> SMTP accepted p{q} at {rate:.0f}/s",
                          percentile(accepted_ms, q), "ms", "direct aiosmtplib send, same server",
                          percentile(reference, q), higher_is_better=False, target=target_))
        for q in (50, 95, 99):
            bench.add(Row("End to end", f"submit -> messageSent webhook p{q}", percentile(hook_ms, q), "ms",
                          "direct aiosmtplib send, same server", percentile(reference, q),
                          higher_is_better=False))
    finally:
        sink.stop()
        receiver.stop()
        try:
            with bench.api() as api:
                api.post("/v1/settings", json={"webhooks": ""})
        except httpx.HTTPError:
            pass
