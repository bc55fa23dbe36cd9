"""Outages with traffic in flight: the database gone for minutes, the broker refusing
publishers, an imap-sync replica killed while mail arrives.  Every message submitted
(REST and SMTP) must reach the SMTP server exactly once and be announced; every new
mail must be announced; nothing may hang."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import httpx
import pytest

from tests.chaos.conftest import ChaosStack
from tests.chaos.traffic import Traffic, api_client, during, new_account, record
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import IMAP_SYNC_ENV, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(900)


def test_postgres_down_for_4_minutes_with_traffic_in_flight_loses_and_repeats_nothing(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver
) -> None:
    outage = float(os.environ.get("MAILGATE_CHAOS_PG_OUTAGE", "240"))
    account = new_account(chaos, chaos_sink.port)
    traffic = Traffic(chaos, chaos_sink, 150, timeout=outage + 300).start()

    def database_away() -> None:
        chaos.pg.stop()
        try:
            with api_client(chaos) as api:
                # Refusals, never a false "queued".
                response = api.post(f"/v1/account/{account}/submit",
                                    json={"to": [{"address": "during-outage@example.org"}], "text": "x"})
                assert response.status_code == 503, response.text
                assert api.get("/health/ready").status_code == 503
            time.sleep(outage)
        finally:
            chaos.pg.start()

    during(traffic, database_away)
    counts = traffic.finish(chaos_receiver, f"PostgreSQL down {outage:.0f}s with traffic in flight")
    assert counts["lost"] == 0
    assert counts["duplicated"] == 0
    assert counts["webhooks_unique"] == 300
    assert chaos_sink.to("during-outage@example.org") == []
    for service in chaos.services.values():
        service.wait_ready(timeout=60)


def test_a_rabbitmq_resource_alarm_neither_hangs_nor_resends(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver
) -> None:
    traffic = Traffic(chaos, chaos_sink, 100).start()

    def broker_blocks_publishers() -> None:
        # A memory alarm: RabbitMQ stops reading from every publishing connection.
        chaos.rabbit.ctl("set_vm_memory_high_watermark", "absolute", "1MB")
        try:
            wait_for(lambda: "memory alarm" in chaos.rabbit.alarms().lower(), timeout=30, message="the alarm on")
            with httpx.Client(base_url=chaos.api_url, headers=chaos.auth_headers, timeout=20) as api:
                # Publishing its account.changed event cannot hold the answer hostage.
                created = api.post("/v1/account", json={
                    "account": f"alarm-{uuid.uuid4().hex[:6]}", "imap": False,
                    "smtp": {"host": "127.0.0.1", "port": chaos_sink.port}})
                assert created.status_code == 200, created.text
            time.sleep(20)  # the traffic goes on meanwhile: sends recorded, events left to the relay
        finally:
            chaos.rabbit.ctl("set_vm_memory_high_watermark", "0.4")

    during(traffic, broker_blocks_publishers)
    counts = traffic.finish(chaos_receiver, "RabbitMQ memory alarm for 20 s")
    assert counts["lost"] == 0
    assert counts["duplicated"] == 0
    assert counts["webhooks_unique"] == 200


@pytest.fixture(scope="module")
def chaos_dovecot() -> Iterator[Dovecot]:
    server = Dovecot(free_port(), free_port())
    server.start()
    yield server
    server.stop()


def _new_mail(to: str) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = "chaos@example.org"
    msg["To"] = to
    msg["Subject"] = "arrives during a takeover"
    msg["Message-ID"] = message_id = make_msgid(domain="example.org")
    msg.set_content("new mail\n")
    return msg.as_bytes(), message_id


def test_kill_9_an_imap_sync_replica_with_20_accounts_loses_no_new_mail(
    chaos: ChaosStack, chaos_sink: SmtpSink, chaos_receiver: WebhookReceiver, chaos_dovecot: Dovecot
) -> None:
    second = chaos.add_worker("imap-sync-2", "mailgate-imap-sync", IMAP_SYNC_ENV)
    second.start()
    users = [chaos_dovecot.new_user() for _ in range(20)]
    accounts: dict[str, str] = {}
    with api_client(chaos) as api:
        for user in users:
            account = f"imap-chaos-{uuid.uuid4().hex[:6]}"
            api.post("/v1/account", json={
                "account": account, "email": f"{user}@dovecot.test",
                "imap": {"host": "127.0.0.1", "port": chaos_dovecot.port, "tls": {"rejectUnauthorized": False},
                         "auth": {"user": user, "pass": chaos_dovecot.password}},
                "smtp": {"host": "127.0.0.1", "port": chaos_sink.port},
            }).raise_for_status()
            accounts[user] = account
        wait_for(lambda: all(api.get(f"/v1/account/{a}").json()["state"] == "connected" for a in accounts.values()),
                 timeout=60, message="20 accounts connected")
    wait_for(lambda: all(chaos_dovecot.connections().get(u) == 1 for u in users), timeout=30,
             message="each account watched by exactly one replica")

    delivered: list[tuple[str, str]] = []  # (account, Message-ID)

    def mail_arrives() -> None:
        for _ in range(60):
            user = random.choice(users)
            raw, message_id = _new_mail(f"{user}@dovecot.test")
            chaos_dovecot.deliver(user, raw)
            delivered.append((accounts[user], message_id))
            time.sleep(0.15)

    arriving = threading.Thread(target=mail_arrives)
    arriving.start()
    time.sleep(2)
    first = chaos.services["imap-sync"]
    first.kill(signal.SIGKILL)
    try:
        arriving.join(60)
        # The survivor takes every account over (the dead replica's leases expire).
        wait_for(lambda: all(chaos_dovecot.connections().get(u) == 1 for u in users), timeout=60,
                 message="the living replica watching all 20 accounts")

        def announced(account: str, message_id: str) -> bool:
            hooks = chaos_receiver.received("messageNew", messageId=message_id)
            return any(h.json["account"] == account for h in hooks)

        wait_for(lambda: all(announced(a, m) for a, m in delivered), timeout=90, interval=0.5,
                 message="a messageNew webhook for every new mail")
        repeats = sum(max(0, len(chaos_receiver.received("messageNew", messageId=m)) - 1) for _, m in delivered)
        record("kill -9 imap-sync with 20 accounts", {"new_mail": len(delivered), "announced": len(delivered),
                                                       "webhooks_repeated": repeats})
    finally:
        first.start()
        second.kill(signal.SIGTERM)
