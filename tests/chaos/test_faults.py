"""Faults with real servers: killed services, a restarted broker, an unreachable SMTP
server and a poison event (outages with traffic in flight are in test_outages.py).  Every test counts messages at the
SMTP server (sent, duplicated, lost) and webhooks at the receiver, and writes the
counts to var/chaos-report.jsonl for the record."""

from __future__ import annotations

import os
import random
import time
import uuid

import httpx
import pytest

from tests.chaos.conftest import ChaosStack
from tests.chaos.traffic import Traffic, api_client, at_server, during, new_account, record, submit_rest
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

# Outages and 500-message flows take minutes, not the suite's default two.
pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("service", ["api", "sender", "webhooks", "smtp-ingress"])
def test_kill_9_a_service_while_rest_and_smtp_submissions_flow(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver, service: str
) -> None:
    target = chaos.services[service]

    def kill_and_restart() -> None:
        time.sleep(random.uniform(0, 0.5))
        target.kill()
        time.sleep(1)
        target.start()

    traffic = Traffic(chaos, chaos_sink, 250).start()
    during(traffic, kill_and_restart)
    counts = traffic.finish(chaos_receiver, f"kill -9 {service}")
    assert counts["lost"] == 0
    assert counts["webhooks_unique"] == 500
    if service != "sender":
        # Both doors answer a client's retry with the first queue id: no message twice.
        assert counts["duplicated"] == 0
    else:
        # SMTP cannot tell a sender that died after the server's 250 from one that
        # died before it (RFC 1047): only messages in that window may go twice.
        assert counts["duplicated"] <= int(chaos.env.get("MAILGATE_SENDER_CONCURRENCY", "32"))


def test_rabbitmq_restart_mid_run(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver
) -> None:
    def restart() -> None:
        chaos.rabbit.stop()
        time.sleep(2)
        chaos.rabbit.start()

    traffic = Traffic(chaos, chaos_sink, 150).start()
    during(traffic, restart)
    counts = traffic.finish(chaos_receiver, "restart RabbitMQ")
    assert counts["lost"] == 0 and counts["duplicated"] == 0
    assert counts["webhooks_unique"] == 300
    for service in chaos.services.values():
        service.wait_ready(timeout=60)


def test_smtp_server_down_then_back(chaos: ChaosStack, chaos_receiver: WebhookReceiver) -> None:
    outage = float(os.environ.get("MAILGATE_CHAOS_SMTP_OUTAGE", "60"))
    port = free_port()
    account = new_account(chaos, port)
    tag = uuid.uuid4().hex[:6]
    recipients = [f"wait-{tag}-{i}@example.org" for i in range(20)]
    queue_ids: dict[str, str] = {}
    submit_rest(chaos, account, recipients, queue_ids, time.monotonic() + 120)
    time.sleep(outage)
    with api_client(chaos) as api:
        states = {api.get(f"/v1/outbox/{q}").json()["state"] for q in queue_ids.values()}
    assert states <= {"deferred", "sending", "queued"}, states
    sink = SmtpSink(port)
    sink.start()
    try:
        wait_for(lambda: all(sink.to(to) for to in recipients), timeout=120, interval=0.5,
                 message="delivery once the server is back")
        counts = record(f"SMTP server down {outage:.0f}s", at_server(sink, recipients))
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
    record("poison event", {"dead_lettered": chaos.rabbit.queue_depth("mailgate.sender.dlq")})
