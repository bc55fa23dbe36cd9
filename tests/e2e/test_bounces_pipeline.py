"""Bounces in a real Dovecot INBOX: detected, linked to the sent message, announced
as messageBounce / messageComplaint, suppressed, and shown on the message timeline."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from mailgate_common.db import Database
from tests.e2e.test_imap_sync import add_imap_account, mail, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.tokens import create_token
from tests.support.webhook_receiver import WebhookReceiver

CORPUS = Path(__file__).parents[1] / "data" / "bounces" / "sisimai" / "maildir" / "bsd"


def dead_address(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@gone.example.net"


def dsn(to: str, recipient: str, original_id: str, *, action: str = "failed", status: str = "5.1.1",
        diagnostic: str = "smtp; 550 5.1.1 User unknown") -> bytes:
    """An RFC 3464 report as Postfix writes it, with the original headers attached."""
    boundary = f"dsn-{uuid.uuid4().hex}"
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@mx.gone.example.net>
To: {to}
Subject: {subject}
Date: Sun, 22 Nov 2026 10:05:00 +0000
Message-ID: <{uuid.uuid4().hex}@mx.gone.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.gone.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.gone.example.net[192.0.2.10] said: {diagnostic.split("; ", 1)[1]}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.gone.example.net
Arrival-Date: Sun, 22 Nov 2026 10:04:58 +0000

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.gone.example.net
Diagnostic-Code: {diagnostic}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: {to}
To: {recipient}
Subject: hello
Message-ID: {original_id}
Date: Sun, 22 Nov 2026 10:04:57 +0000

--{boundary}--
""".replace("\n", "\r\n").encode()


def arf(to: str, recipient: str, original_id: str) -> bytes:
    """An RFC 5965 feedback report: the recipient marked our message as spam."""
    boundary = f"arf-{uuid.uuid4().hex}"
    return f"""\
From: Feedback Loop <fbl@feedback.example.net>
To: {to}
Subject: FW: complaint about a message
Date: Sun, 22 Nov 2026 11:00:00 +0000
Message-ID: <{uuid.uuid4().hex}@feedback.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP
192.0.2.1 on Sun, 22 Nov 2026 10:59:00 +0000.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <{to}>
Original-Rcpt-To: <{recipient}>
Arrival-Date: Sun, 22 Nov 2026 10:59:00 +0000
Source-IP: 192.0.2.1

--{boundary}
Content-Type: message/rfc822
Content-Disposition: inline

From: {to}
To: {recipient}
Subject: hello
Message-ID: {original_id}
Date: Sun, 22 Nov 2026 10:58:00 +0000

hello
--{boundary}--
""".replace("\n", "\r\n").encode()


class Mailbox:
    """One IMAP+SMTP account on Dovecot and the sink, shared by this module's tests."""

    def __init__(self, api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> None:
        self.dovecot = dovecot
        self.user = dovecot.new_user()
        self.address = f"{self.user}@dovecot.test"
        self.account = add_imap_account(api, dovecot, smtp_sink, self.user)
        wait_connected(api, self.account)

    def send(self, api: httpx.Client, smtp_sink: SmtpSink, to: str) -> dict[str, Any]:
        response = api.post(f"/v1/account/{self.account}/submit", json={
            "from": {"address": self.address}, "to": [{"address": to}],
            "subject": f"bounce me {uuid.uuid4().hex[:6]}", "text": "this address is about to bounce",
        })
        assert response.status_code == 200, response.text
        sent: dict[str, Any] = response.json()
        wait_for(lambda: smtp_sink.to(to), timeout=15, message=f"delivery to {to}")
        wait_for(lambda: api.get(f"/v1/outbox/{sent['queueId']}").json()["state"] == "sent",
                 timeout=10, message="outbox state sent")
        return sent

    def deliver(self, raw: bytes) -> None:
        self.dovecot.deliver(self.user, raw)


@pytest.fixture(scope="module")
def mailbox(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Mailbox:
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as api:
        return Mailbox(api, dovecot, smtp_sink)


def hooks(receiver: WebhookReceiver, event: str, account: str, **data: Any) -> list[dict[str, Any]]:
    return [h.json for h in receiver.received(event, **data) if h.json["account"] == account]


def one_hook(receiver: WebhookReceiver, event: str, account: str, **data: Any) -> dict[str, Any]:
    found = wait_for(lambda: hooks(receiver, event, account, **data), timeout=15,
                     message=f"{event} webhook {data}")
    assert len(found) == 1, found
    return found[0]


def suppressions(api: httpx.Client, account: str) -> dict[str, dict[str, Any]]:
    listed = api.get(f"/v1/account/{account}/suppressions", params={"pageSize": 100})
    assert listed.status_code == 200, listed.text
    return {e["address"]: e for e in listed.json()["suppressions"]}


def smtp_rcpt(stack: Stack, account: str, sender: str, to: str) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=10) as client:
        client.starttls(context=context)
        client.ehlo("client.test")
        client.user, client.password = account, create_token(stack.database_url, account, ["smtp"])
        assert client.auth("PLAIN", client.auth_plain)[0] == 235
        assert client.mail(sender)[0] == 250
        return client.rcpt(to)


def test_hard_bounce_is_linked_suppressed_and_on_the_timeline(
    stack: Stack, api: httpx.Client, mailbox: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    dead = dead_address("dead")
    sent = mailbox.send(api, smtp_sink, dead)
    queue_id, message_id = sent["queueId"], sent["messageId"]

    mailbox.deliver(dsn(mailbox.address, dead, message_id))
    hook = one_hook(webhook_receiver, "messageBounce", mailbox.account, queueId=queue_id)
    data = hook["data"]
    assert data["recipient"] == dead
    assert data["hard"] is True and data["reason"] == "userunknown"
    assert data["action"] == "failed"
    assert data["messageId"] == message_id
    assert data["response"]["status"] == "5.1.1"
    assert "User unknown" in data["response"]["message"]
    assert data["mta"] and data["bounceMessage"]
    # The DSN itself is indexed like any new mail (and was not marked read).
    new = one_hook(webhook_receiver, "messageNew", mailbox.account, id=data["bounceMessage"])
    assert new["data"]["unseen"] is True

    steps = api.get(f"/v1/outbox/{queue_id}/timeline").json()["timeline"]
    [bounce] = [s for s in steps if s["step"] == "bounce"]
    assert bounce["detail"]["recipient"] == dead and bounce["detail"]["hard"] is True
    assert bounce["detail"]["status"] == "5.1.1" and bounce["detail"]["reason"] == "userunknown"
    assert [s["step"] for s in steps][:2] == ["queued", "sent"]
    wait_for(lambda: any(s["step"] == "webhook" and s["detail"]["event"] == "messageBounce"
                         for s in api.get(f"/v1/outbox/{queue_id}/timeline").json()["timeline"]),
             message="messageBounce delivery on the timeline")

    entry = suppressions(api, mailbox.account)[dead]
    assert entry["source"] == "bounce"
    assert "userunknown" in entry["reason"] and "5.1.1" in entry["reason"]

    refused = api.post(f"/v1/account/{mailbox.account}/submit", json={
        "from": {"address": mailbox.address}, "to": [{"address": dead}], "subject": "again", "text": "x",
    })
    assert refused.status_code == 422, refused.text
    assert dead in refused.json()["message"]

    code, reply = smtp_rcpt(stack, mailbox.account, mailbox.address, dead)
    assert code == 550 and reply.startswith(b"5.7.1"), reply


def test_complaint_is_announced_and_suppressed(
    api: httpx.Client, mailbox: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    reader = dead_address("annoyed")
    sent = mailbox.send(api, smtp_sink, reader)
    mailbox.deliver(arf(mailbox.address, reader, sent["messageId"]))
    hook = one_hook(webhook_receiver, "messageComplaint", mailbox.account, queueId=sent["queueId"])
    data = hook["data"]
    assert data["recipient"] == reader
    assert data["feedbackType"] == "abuse"
    assert data["messageId"] == sent["messageId"]
    assert data["arf"]["originalRcptTo"] == [reader]
    entry = suppressions(api, mailbox.account)[reader]
    assert entry["source"] == "complaint"
    steps = api.get(f"/v1/outbox/{sent['queueId']}/timeline").json()["timeline"]
    assert [s["detail"]["recipient"] for s in steps if s["step"] == "complaint"] == [reader]


def test_soft_bounce_is_announced_but_not_suppressed(
    api: httpx.Client, mailbox: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    full = dead_address("full")
    sent = mailbox.send(api, smtp_sink, full)
    mailbox.deliver(dsn(mailbox.address, full, sent["messageId"], action="delayed", status="4.2.2",
                        diagnostic="smtp; 452 4.2.2 Mailbox full"))
    hook = one_hook(webhook_receiver, "messageBounce", mailbox.account, queueId=sent["queueId"])
    assert hook["data"]["recipient"] == full
    assert hook["data"]["hard"] is False
    assert hook["data"]["action"] == "delayed"
    assert hook["data"]["reason"] == "mailboxfull"
    assert full not in suppressions(api, mailbox.account)
    again = api.post(f"/v1/account/{mailbox.account}/submit", json={
        "from": {"address": mailbox.address}, "to": [{"address": full}], "subject": "retry", "text": "x",
    })
    assert again.status_code == 200, again.text


def test_ordinary_mail_is_not_a_bounce(mailbox: Mailbox, webhook_receiver: WebhookReceiver) -> None:
    raw, message_id = mail("just a note", mailbox.address)
    mailbox.deliver(raw)
    new = one_hook(webhook_receiver, "messageNew", mailbox.account, messageId=message_id)
    # The bounce check runs (and publishes) before the index commit that announces
    # messageNew, so a bounce for this message would already be here.
    time.sleep(0.5)
    assert hooks(webhook_receiver, "messageBounce", mailbox.account, bounceMessage=new["data"]["id"]) == []


def test_real_postfix_bounce_from_the_corpus_is_detected(
    mailbox: Mailbox, webhook_receiver: WebhookReceiver
) -> None:
    raw = (CORPUS / "lhost-postfix-01.eml").read_bytes()
    # A unique Message-ID so this copy's messageNew can be told apart from earlier runs.
    marker = f"<{uuid.uuid4().hex}@p351355.pool.example.ne.jp>"
    raw = raw.replace(b"<20130429234532.00000000000@p351355.pool.example.ne.jp>", marker.encode(), 1)
    mailbox.deliver(raw)
    new = one_hook(webhook_receiver, "messageNew", mailbox.account, messageId=marker)
    hook = one_hook(webhook_receiver, "messageBounce", mailbox.account, bounceMessage=new["data"]["id"])
    assert hook["data"]["recipient"] == "r@p351355.pool.example.ne.jp"
    assert hook["data"]["response"]["status"] == "5.1.1"
    assert hook["data"]["queueId"] is None  # not a message mailgate sent


async def _forget_indexed(database_url: str, message: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM messages WHERE id = :id"), {"id": message})
    finally:
        await db.dispose()


def test_resync_does_not_announce_a_bounce_twice(
    stack: Stack, api: httpx.Client, mailbox: Mailbox, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    dead = dead_address("twice")
    sent = mailbox.send(api, smtp_sink, dead)
    mailbox.deliver(dsn(mailbox.address, dead, sent["messageId"]))
    data = one_hook(webhook_receiver, "messageBounce", mailbox.account, queueId=sent["queueId"])["data"]

    # As if imap-sync died after recording the bounce but before indexing the DSN:
    # the next sync (here: prompted by more mail) finds it "new" again and re-runs the check.
    asyncio.run(_forget_indexed(stack.database_url, data["bounceMessage"]))
    mailbox.deliver(mail("prompt a resync", mailbox.address)[0])
    wait_for(lambda: len(hooks(webhook_receiver, "messageNew", mailbox.account, id=data["bounceMessage"])) == 2,
             timeout=20, message="the DSN re-indexed after the reconnect")
    time.sleep(0.5)
    assert len(hooks(webhook_receiver, "messageBounce", mailbox.account, queueId=sent["queueId"])) == 1
    steps = api.get(f"/v1/outbox/{sent['queueId']}/timeline").json()["timeline"]
    assert len([s for s in steps if s["step"] == "bounce"]) == 1
