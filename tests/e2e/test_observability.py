"""One trace follows a message across services; every service serves health and metrics."""

from __future__ import annotations

import uuid

import httpx

from tests.support.otlp_collector import OtlpCollector
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver


def test_one_trace_from_submit_through_smtp_to_webhook(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
    otlp_collector: OtlpCollector,
) -> None:
    to = f"trace-{uuid.uuid4().hex[:8]}@example.org"
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    trace_id = traceparent.split("-")[1]
    response = api.post(f"/v1/account/{account}/submit", json={"to": [{"address": to}], "text": "traced"},
                        headers={"traceparent": traceparent})
    queue_id = response.json()["queueId"]
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id), message="messageSent")

    def whole_journey() -> set[tuple[str, str]]:
        names = {(s.service, s.name) for s in otlp_collector.trace(trace_id)}
        wanted = {("mailgate-api", f"POST /v1/account/{account}/submit"), ("mailgate-sender", "smtp deliver"),
                  ("mailgate-webhooks", "webhook POST")}
        return names if wanted <= names else set()

    names = wait_for(whole_journey, timeout=15, message="spans of every service in one trace")
    assert ("mailgate-api", f"POST /v1/account/{account}/submit") in names
    assert ("mailgate-sender", "handle submission.queued") in names
    assert ("mailgate-webhooks", "handle message.sent") in names
    [hook] = webhook_receiver.received("messageSent", queueId=queue_id)
    assert hook.headers["traceparent"].split("-")[1] == trace_id
    [smtp] = [s for s in otlp_collector.trace(trace_id) if s.name == "smtp deliver"]
    assert smtp.attributes["mailgate.queue_id"] == queue_id


def test_every_service_reports_health_and_metrics(stack: Stack) -> None:
    # Extra replicas that earlier tests started and stopped stay listed (their logs are kept).
    running = {name: service for name, service in stack.services.items() if service.proc is not None}
    assert {"api", "sender", "webhooks", "imap-sync", "smtp-ingress"} <= running.keys()
    for name, service in running.items():
        assert httpx.get(service.health_url).status_code == 200, name
        base = service.health_url.rsplit("/health", 1)[0]
        metrics = httpx.get(f"{base}/metrics").text
        assert "# TYPE" in metrics, name
        if name != "api":
            assert httpx.get(f"{base}/health/live").status_code == 200, name
    sender_base = stack.services["sender"].health_url.rsplit("/health", 1)[0]
    assert "mailgate_send_attempts_total" in httpx.get(f"{sender_base}/metrics").text
