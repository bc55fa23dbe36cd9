"""A service killed (SIGKILL) mid-flight and restarted loses nothing and sends nothing twice."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver


def _submit(api: httpx.Client, account: str, to: str, subject: str) -> str:
    response = api.post(f"/v1/account/{account}/submit",
                        json={"to": [{"address": to}], "subject": subject, "text": subject})
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def test_messages_submitted_while_sender_is_dead_are_sent_once_after_restart(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    sender = stack.services["sender"]
    sender.kill()
    try:
        batch = uuid.uuid4().hex[:8]
        recipients = [f"down-{batch}-{i}@example.org" for i in range(20)]
        for i, to in enumerate(recipients):
            _submit(api, account, to, f"while down {i}")
        time.sleep(1)
        assert all(smtp_sink.to(to) == [] for to in recipients)
    finally:
        sender.start()
    wait_for(lambda: all(smtp_sink.to(to) for to in recipients), timeout=30,
             message="all 20 delivered after restart")
    time.sleep(1)
    assert [len(smtp_sink.to(to)) for to in recipients] == [1] * 20


def test_sender_killed_during_smtp_transaction_resends_exactly_once(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = f"slowrcpt-{uuid.uuid4().hex[:8]}@example.org"
    queue_id = _submit(api, account, to, "killed mid-flight")
    # The sink holds RCPT for 3 s: the message is claimed and on the wire.
    wait_for(lambda: api.get(f"/v1/outbox/{queue_id}").json()["state"] == "sending",
             message="message in flight")
    sender = stack.services["sender"]
    sender.kill()
    sender.start()
    wait_for(lambda: smtp_sink.to(to), timeout=30, message="redelivery after the claim expired")
    time.sleep(1)
    assert len(smtp_sink.to(to)) == 1
    entry = api.get(f"/v1/outbox/{queue_id}").json()
    assert entry["state"] == "sent" and entry["attemptsMade"] == 1


def test_webhooks_killed_mid_stream_loses_no_event(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink,
    webhook_receiver: WebhookReceiver,
) -> None:
    webhooks = stack.services["webhooks"]
    batch = uuid.uuid4().hex[:8]
    queue_ids = [_submit(api, account, f"wh-{batch}-{i}@example.org", f"wh {i}") for i in range(30)]
    webhooks.kill()
    webhooks.start()
    sent = {q: None for q in queue_ids}

    def all_arrived() -> bool:
        return all(webhook_receiver.received("messageSent", queueId=q) for q in sent)

    wait_for(all_arrived, timeout=40, message="a messageSent webhook for every message")
    # Delivery is at-least-once; the webhook-id header lets a subscriber drop repeats,
    # and after that every event is there exactly once.
    ids = Counter(
        h.headers["webhook-id"]
        for q in queue_ids
        for h in webhook_receiver.received("messageSent", queueId=q)
    )
    assert len(ids) == len(queue_ids)


def test_sigterm_stops_each_service_cleanly_and_in_time(stack: Stack) -> None:
    import signal

    for name in ("sender", "webhooks", "api", "smtp-ingress", "imap-sync"):
        service = stack.services[name]
        started = time.monotonic()
        code = service.kill(signal.SIGTERM)
        assert code == 0, f"{name} exited with {code}: {service.log_tail()}"
        assert time.monotonic() - started < 25
        service.start()
