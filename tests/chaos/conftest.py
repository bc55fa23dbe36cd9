"""Fault tests (`make chaos`): mailgate on its own throwaway PostgreSQL and RabbitMQ,
so the tests can stop, kill and restart them."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ThrowawayPostgres, ThrowawayRabbitMQ
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import BIN, Stack, free_port
from tests.support.webhook_receiver import WebhookReceiver


class ChaosStack(Stack):
    def __init__(self, workdir: Path, pg: ThrowawayPostgres, rabbit: ThrowawayRabbitMQ) -> None:
        super().__init__(workdir)
        self.pg = pg
        self.rabbit = rabbit
        self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/{self.db_name}"
        self.amqp_url = rabbit.url
        self.env.update({
            "MAILGATE_DATABASE_URL": self.database_url,
            "MAILGATE_AMQP_URL": self.amqp_url,
            # Production-like pacing: retries must outlast the outages below.
            "MAILGATE_DELIVERY_RETRY_BASE": "5",
            "MAILGATE_DELIVERY_RETRY_MAX": "30",
            "MAILGATE_SENDER_CLAIM_TIMEOUT": "10",
            "MAILGATE_LOG_LEVEL": "WARNING",
        })

    def create(self) -> None:
        subprocess.run(["psql", self.pg.admin_url, "-qc", f'CREATE DATABASE "{self.db_name}"'],
                       check=True, capture_output=True)
        subprocess.run([str(BIN / "mailgate"), "migrate"], env=self.env, check=True, capture_output=True)

    def destroy(self) -> None:
        for service in self.services.values():
            service.kill()


@pytest.fixture(scope="session")
def chaos_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def chaos_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(free_port())
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def chaos(chaos_receiver: WebhookReceiver) -> Iterator[ChaosStack]:
    pg, rabbit = ThrowawayPostgres(), ThrowawayRabbitMQ()
    pg.start()
    rabbit.start()
    stack = ChaosStack(Path(tempfile.mkdtemp(prefix="mailgate-chaos-")), pg, rabbit)
    try:
        stack.create()
        stack.start_default()
        httpx.post(f"{stack.api_url}/v1/settings", json={"webhooks": chaos_receiver.url},
                   headers=stack.auth_headers).raise_for_status()
        yield stack
    finally:
        stack.keep_logs(Path("var/chaos-logs"))
        stack.destroy()
        rabbit.destroy()
        pg.destroy()
