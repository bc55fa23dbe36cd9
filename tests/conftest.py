"""Session-wide real servers: PostgreSQL database, RabbitMQ vhost, an SMTP sink,
a webhook receiver and the mailgate services, started once per test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dns_server import DnsServer
from tests.support.dovecot import Dovecot
from tests.support.otlp_collector import OtlpCollector
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, free_port
from tests.support.webhook_receiver import WebhookReceiver

# Fault tests stop and restart servers; they run with `make chaos`, not `make test`.
collect_ignore_glob = [] if os.environ.get("MAILGATE_CHAOS") else ["chaos/*"]


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port())
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., WebhookReceiver]]:
    """Starts extra webhook receivers (``receivers()`` or ``receivers(port)``), stopped after the test."""
    started: list[WebhookReceiver] = []

    def make(port: int | None = None) -> WebhookReceiver:
        receiver = WebhookReceiver(port or free_port())
        receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture
def endpoints(api: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Creates webhook endpoints (``endpoints(url, **fields)``); deletes them after the test so no
    retries linger."""
    created: list[str] = []

    def make(url: str, **fields: Any) -> dict[str, Any]:
        response = api.post("/v1/webhooks", json={"url": url, **fields})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        created.append(body["id"])
        return body

    yield make
    for endpoint_id in created:
        api.delete(f"/v1/webhooks/{endpoint_id}")


@pytest.fixture
def routes(api: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Inbound routes made through the API; removed after the test (they are global)."""
    created: list[str] = []

    def make(**body: Any) -> dict[str, Any]:
        response = api.post("/v1/inbound/routes", json={"name": "test route", **body})
        assert response.status_code == 201, response.text
        route: dict[str, Any] = response.json()
        created.append(route["id"])
        return route

    yield make
    for route_id in created:
        api.delete(f"/v1/inbound/routes/{route_id}")


@pytest.fixture(scope="session")
def otlp_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector(free_port())
    collector.start()
    yield collector
    collector.stop()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    """The zones the services' SPF, DKIM and DMARC lookups see."""
    server = DnsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver,
          otlp_collector: OtlpCollector, dns_server: DnsServer) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    stack.env["MAILGATE_DNS_SERVERS"] = dns_server.address
    # Every service exports its spans, so a test can follow one message's trace.
    stack.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_collector.url
    stack.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    stack.create()
    try:
        stack.start_default()
        httpx.post(f"{stack.api_url}/v1/settings", json={"webhooks": webhook_receiver.url},
                   headers=stack.auth_headers).raise_for_status()
        yield stack
    finally:
        stack.keep_logs(Path("var/test-logs"))
        stack.destroy()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as client:
        yield client


@pytest.fixture
def account(api: httpx.Client, smtp_sink: SmtpSink) -> str:
    """A fresh send-only account whose SMTP server is the sink."""
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "account": account_id,
        "name": "Test Sender",
        "email": f"{account_id}@sender.test",
        "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": account_id, "pass": "smtp-password"}},
    }
    response = api.post("/v1/account", json=body)
    assert response.status_code == 200, response.text
    return account_id


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot IMAP server with users user1..user40 (password "secret")."""
    server = Dovecot(free_port(), free_port())
    server.start()
    yield server
    server.stop()
