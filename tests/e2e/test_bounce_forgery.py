"""Anyone can mail a "bounce" to a watched mailbox: only a report about a message the
account sent, to the recipient it names, may suppress an address.  Everything
else is recorded and announced with ``verified: false`` and changes nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_bounces_pipeline import Mailbox, arf, dead_address, dsn, one_hook, suppressions
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def sender(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Mailbox:
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as api:
        return Mailbox(api, dovecot, smtp_sink)


@pytest.fixture(scope="module")
def other(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Mailbox:
    """Another tenant with a watched mailbox of its own."""
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as api:
        return Mailbox(api, dovecot, smtp_sink)


def test_a_forged_dsn_for_an_address_never_mailed_suppresses_nothing(
    api: httpx.Client, sender: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    # The shape of the review's repro/forged_dsn.py: any Message-ID, any victim address.
    victim = f"ceo-{uuid.uuid4().hex[:6]}@biggest-customer.example"
    sender.deliver(dsn(sender.address, victim, f"<{uuid.uuid4().hex}@victim-company.example>"))
    data = one_hook(webhook_receiver, "messageBounce", sender.account, recipient=victim)["data"]
    assert data["verified"] is False and data["hard"] is True
    assert data["queueId"] is None
    assert victim not in suppressions(api, sender.account)
    response = api.post(f"/v1/account/{sender.account}/submit", json={
        "from": {"address": sender.address}, "to": [{"address": victim}], "subject": "still fine", "text": "x",
    })
    assert response.status_code == 200, response.text


def test_a_dsn_quoting_a_sent_message_but_another_recipient_suppresses_nothing(
    api: httpx.Client, sender: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    sent = sender.send(api, smtp_sink, dead_address("real"))
    bystander = dead_address("bystander")
    sender.deliver(dsn(sender.address, bystander, sent["messageId"]))
    data = one_hook(webhook_receiver, "messageBounce", sender.account, recipient=bystander)["data"]
    assert data["verified"] is False
    assert bystander not in suppressions(api, sender.account)


def test_a_genuine_bounce_of_a_sent_message_still_suppresses(
    api: httpx.Client, sender: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    dead = dead_address("gone")
    sent = sender.send(api, smtp_sink, dead)
    sender.deliver(dsn(sender.address, dead, sent["messageId"]))
    data = one_hook(webhook_receiver, "messageBounce", sender.account, recipient=dead)["data"]
    assert data["verified"] is True and data["queueId"] == sent["queueId"]
    assert suppressions(api, sender.account)[dead]["source"] == "bounce"


def test_a_forgery_quoting_another_accounts_message_suppresses_nothing_for_either(
    api: httpx.Client, sender: Mailbox, other: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    target = dead_address("customer")
    sent = sender.send(api, smtp_sink, target)
    # The other tenant mails its own INBOX reports quoting the first tenant's message.
    other.deliver(dsn(other.address, target, sent["messageId"]))
    other.deliver(arf(other.address, target, sent["messageId"]))
    bounce = one_hook(webhook_receiver, "messageBounce", other.account, recipient=target)["data"]
    complaint = one_hook(webhook_receiver, "messageComplaint", other.account, recipient=target)["data"]
    for data in (bounce, complaint):
        assert data["verified"] is False
        # Nothing about the first tenant's message reaches the other tenant.
        assert data["queueId"] is None
    assert target not in suppressions(api, sender.account)
    assert target not in suppressions(api, other.account)
    steps = api.get(f"/v1/outbox/{sent['queueId']}/timeline").json()["timeline"]
    assert not [s for s in steps if s["step"] in ("bounce", "complaint")]
