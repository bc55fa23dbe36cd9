"""Faults with real servers: killed services, a restarted broker, a database outage,
an unreachable SMTP server and a poison event.  Every test counts messages at the
SMTP server (sent, duplicated, lost) and webhooks at the receiver, and writes the
counts to var/chaos-report.jsonl for the record."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import ChaosStack
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

REPORT = Path("var/chaos-report.jsonl")
# Outages and 500-message flows take minutes, not the suite's default two.
pytestmark = pytest.mark.timeout(600)


def _api(stack: ChaosStack) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=10)


def _account(stack: ChaosStack, port: int) -> str:
    account = f"chaos-{uuid.uuid4().hex[:8]}"
    with _api(stack) as api:
        api.post("/v1/account", json={
            "account": account, "email": f"{account}@sender.test", "imap": False,
            "smtp": {"host": "127.0.0.1", "port": port, "auth": {"user": account, "pass": "smtp-password"}},
        }).raise_for_status()
    return account


def _submit_all(stack: ChaosStack, account: str, recipients: list[str], queue_ids: dict[str, str]) -> None:
    """Submit like a careful client: retry until answered, with an Idempotency-Key so
    a retry after a lost answer never queues twice."""
    with _api(stack) as api:
        for to in recipients:
            key = uuid.uuid4().hex
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    response = api.post(f"/v1/account/{account}/submit", headers={"Idempotency-Key": key},
                                        json={"to": [{"address": to}], "subject": to, "text": "chaos"})
                    if response.status_code == 200:
                        queue_ids[to] = response.json()["queueId"]
                        break
                    assert response.status_code == 503, response.text
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)


def _count(sink: SmtpSink, recipients: list[str]) -> dict[str, int]:
    counts = [len(sink.to(to)) for to in recipients]
    return {"messages": len(recipients), "sent": sum(1 for c in counts if c),
            "duplicated": sum(c - 1 for c in counts if c > 1), "lost": sum(1 for c in counts if c == 0)}


def _record(name: str, counts: dict[str, Any]) -> None:
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as report:
        report.write(json.dumps({"test": name, **counts}) + "\n")
    print(name, counts)


def _flow(stack: ChaosStack, sink: SmtpSink, receiver: WebhookReceiver, count: int, fault: Any,
          name: str) -> dict[str, int]:
    account = _account(stack, sink.port)
    tag = uuid.uuid4().hex[:6]
    recipients = [f"{tag}-{i}@example.org" for i in range(count)]
    queue_ids: dict[str, str] = {}
    submitter = threading.Thread(target=_submit_all, args=(stack, account, recipients, queue_ids))
    submitter.start()
    wait_for(lambda: len(sink.to(recipients[count // 5])) > 0 or len(queue_ids) > count // 3, timeout=60,
             message="traffic flowing")
    fault()
    submitter.join(180)
    assert len(queue_ids) == count, "every submit was eventually answered"
    wait_for(lambda: all(sink.to(to) for to in recipients), timeout=240, interval=0.5,
             message="every message at the SMTP server")
    time.sleep(2)

    def all_hooks() -> bool:
        return all(receiver.received("messageSent", queueId=q) for q in queue_ids.values())

    wait_for(all_hooks, timeout=120, interval=0.5, message="a messageSent webhook for every message")
    counts = _count(sink, recipients)
    hooks = Counter(h.headers["webhook-id"] for q in queue_ids.values()
                    for h in receiver.received("messageSent", queueId=q))
    counts["webhooks_unique"] = len(hooks)
    counts["webhooks_repeated"] = sum(c - 1 for c in hooks.values())
    _record(name, counts)
    assert counts["lost"] == 0
    assert counts["webhooks_unique"] == count
    return counts


@pytest.mark.parametrize("service", ["api", "sender", "webhooks", "smtp-ingress"])
def test_kill_9_a_service_while_500_messages_flow(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver, service: str
) -> None:
    target = chaos.services[service]

    def fault() -> None:
        time.sleep(random.uniform(0, 0.5))
        target.kill()
        time.sleep(1)
        target.start()

    counts = _flow(chaos, chaos_sink, chaos_receiver, 500, fault, f"kill -9 {service}")
    if service != "sender":
        assert counts["duplicated"] == 0
    else:
        # SMTP cannot tell a sender that died after the server's 250 from one that
        # died before it (RFC 1047): only messages in that window may go twice.
        assert counts["duplicated"] <= int(chaos.env.get("MAILGATE_SENDER_CONCURRENCY", "32"))


def test_rabbitmq_restart_mid_run(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver
) -> None:
    def fault() -> None:
        chaos.rabbit.stop()
        time.sleep(2)
        chaos.rabbit.start()

    counts = _flow(chaos, chaos_sink, chaos_receiver, 300, fault, "restart RabbitMQ")
    assert counts["duplicated"] == 0
    for service in chaos.services.values():
        service.wait_ready(timeout=60)


def test_postgres_down_for_10_seconds(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver
) -> None:
    account = _account(chaos, chaos_sink.port)
    chaos.pg.stop()
    try:
        with _api(chaos) as api:
            response = api.post(f"/v1/account/{account}/submit",
                                json={"to": [{"address": "during-outage@example.org"}], "text": "x"})
            assert response.status_code == 503, response.text
            assert response.json()["statusCode"] == 503
            assert api.get("/health/ready").status_code == 503
        time.sleep(8)
    finally:
        chaos.pg.start()
    for service in chaos.services.values():
        service.wait_ready(timeout=60)
    counts = _flow(chaos, chaos_sink, chaos_receiver, 50, lambda: None, "after PostgreSQL outage")
    assert counts["duplicated"] == 0
    assert chaos_sink.to("during-outage@example.org") == []


def test_smtp_server_down_then_back(chaos: ChaosStack, chaos_receiver: WebhookReceiver) -> None:
    outage = float(os.environ.get("MAILGATE_CHAOS_SMTP_OUTAGE", "60"))
    port = free_port()
    account = _account(chaos, port)
    tag = uuid.uuid4().hex[:6]
    recipients = [f"wait-{tag}-{i}@example.org" for i in range(20)]
    queue_ids: dict[str, str] = {}
    _submit_all(chaos, account, recipients, queue_ids)
    time.sleep(outage)
    with _api(chaos) as api:
        states = {api.get(f"/v1/outbox/{q}").json()["state"] for q in queue_ids.values()}
    assert states <= {"deferred", "sending", "queued"}, states
    sink = SmtpSink(port)
    sink.start()
    try:
        wait_for(lambda: all(sink.to(to) for to in recipients), timeout=120, interval=0.5,
                 message="delivery once the server is back")
        counts = _count(sink, recipients)
        _record(f"SMTP server down {outage:.0f}s", counts)
        assert counts["lost"] == 0 and counts["duplicated"] == 0
    finally:
        sink.stop()


def test_poison_event_is_dead_lettered_not_looped(chaos: ChaosStack) -> None:
    import asyncio

    import aio_pika

    async def publish() -> None:
        connection = await aio_pika.connect(chaos.amqp_url)
        channel = await connection.channel()
        exchange = await channel.get_exchange("mailgate.events")
        await exchange.publish(aio_pika.Message(b"\x00not json at all"), routing_key="submission.queued")
        await connection.close()

    asyncio.run(publish())
    wait_for(lambda: chaos.rabbit.queue_depth("mailgate.sender.dlq") >= 1, timeout=20,
             message="poison message in the dead-letter queue")
    sender = chaos.services["sender"]
    metrics = httpx.get(sender.health_url.replace("/health/ready", "/metrics")).text
    line = next(m for m in metrics.splitlines()
                if m.startswith('mailgate_events_dead_lettered_total{queue="mailgate.sender"}'))
    assert float(line.split()[-1]) >= 1
    assert httpx.get(sender.health_url).status_code == 200
    _record("poison event", {"dead_lettered": chaos.rabbit.queue_depth("mailgate.sender.dlq")})
