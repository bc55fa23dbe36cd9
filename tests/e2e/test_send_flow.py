"""REST submit -> RabbitMQ -> sender -> SMTP server -> signed webhook, end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for
from tests.support.webhook_receiver import WebhookReceiver

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def rcpt(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def submit(api: httpx.Client, account: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = api.post(f"/v1/account/{account}/submit", json=body, **kw)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def outbox(api: httpx.Client, queue_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/outbox/{queue_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_submitted_message_arrives_intact_and_webhook_is_signed(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    to, cc, bcc = rcpt("to"), rcpt("cc"), rcpt("bcc")
    attachment = bytes(range(256)) * 40
    queued = submit(api, account, {
        "from": {"name": "Jürgen Müller", "address": f"{account}@sender.test"},
        "to": [{"name": "Zoë", "address": to}],
        "cc": [{"address": cc}],
        "bcc": [{"address": bcc}],
        "subject": "Grüße ✓ from mailgate",
        "text": "Hello in plain text — ünïcödé",
        "html": "<p>Hello <b>HTML</b> <img src=\"cid:logo@mailgate\"></p>",
        "attachments": [
            {"filename": "data.bin", "content": base64.b64encode(attachment).decode(),
             "contentType": "application/octet-stream"},
            {"filename": "logo.png", "content": base64.b64encode(PNG).decode(),
             "contentType": "image/png", "cid": "logo@mailgate"},
        ],
        "headers": {"X-Campaign": "welcome"},
    })
    assert queued["response"] == "Queued for delivery"
    assert queued["messageId"].startswith("<") and queued["queueId"]

    [received] = wait_for(lambda: smtp_sink.to(to), message="delivery to the SMTP sink")
    assert received.mail_from == f"{account}@sender.test"
    assert sorted(received.rcpt_tos) == sorted([to, cc, bcc])
    msg = received.message
    assert msg["Subject"] == "Grüße ✓ from mailgate"
    assert msg["From"].addresses[0].display_name == "Jürgen Müller"
    assert msg["To"].addresses[0].addr_spec == to
    assert msg["Cc"].addresses[0].addr_spec == cc
    assert msg["Bcc"] is None and bcc not in received.data.decode("ascii", "replace")
    assert msg["Message-ID"] == queued["messageId"]
    assert msg["X-Campaign"] == "welcome"
    assert msg["Date"] is not None and msg["MIME-Version"] == "1.0"
    assert msg.get_body(("plain",)).get_content().strip() == "Hello in plain text — ünïcödé"
    assert "Hello <b>HTML</b>" in msg.get_body(("html",)).get_content()
    parts = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert parts["data.bin"].get_content() == attachment
    assert parts["logo.png"].get_content() == PNG
    assert parts["logo.png"]["Content-ID"] == "<logo@mailgate>"

    [hook] = wait_for(lambda: webhook_receiver.received("messageSent", queueId=queued["queueId"]),
                      message="messageSent webhook")
    body = hook.json
    assert body["account"] == account
    assert body["data"]["messageId"] == queued["messageId"]
    assert body["data"]["response"].startswith("250 ")
    assert body["data"]["envelope"] == {"from": f"{account}@sender.test", "to": received.rcpt_tos}

    secret = api.get("/v1/settings", params={"serviceSecret": "true"}).json()["serviceSecret"]
    # Standard Webhooks library verifies id, timestamp and signature.
    Webhook(secret).verify(hook.body, hook.headers)
    # EmailEngine's scheme: base64url HMAC-SHA256 of the raw body.
    expected = base64.urlsafe_b64encode(
        hmac.new(secret.encode(), hook.body, hashlib.sha256).digest()
    ).rstrip(b"=").decode()
    assert hook.headers["x-ee-wh-signature"] == expected
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(hook.body.replace(b"250", b"251"), hook.headers)

    entry = outbox(api, queued["queueId"])
    assert entry["state"] == "sent" and entry["attemptsMade"] == 1
    assert entry["attemptsLog"][0]["outcome"] == "sent"


def test_permanent_rejection_fails_once_without_retry(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    to = rcpt("bounce")
    queued = submit(api, account, {"to": [{"address": to}], "subject": "nope", "text": "x"})
    [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queued["queueId"]),
                        message="messageFailed")
    assert "550" in failed.json["data"]["error"]
    [error] = webhook_receiver.received("messageDeliveryError", queueId=queued["queueId"])
    assert error.json["data"]["smtpResponseCode"] == 550
    assert error.json["data"]["job"] == {"attemptsMade": 1, "attempts": 10, "nextAttempt": False}
    entry = outbox(api, queued["queueId"])
    assert entry["state"] == "failed" and entry["attemptsMade"] == 1
    assert smtp_sink.to(to) == []
    assert webhook_receiver.received("messageSent", queueId=queued["queueId"]) == []


def test_temporary_failure_is_retried_then_sent(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    to = rcpt("defer1")
    queued = submit(api, account, {"to": [{"address": to}], "subject": "later", "text": "x"})
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queued["queueId"]),
             timeout=20, message="messageSent after retry")
    [error] = webhook_receiver.received("messageDeliveryError", queueId=queued["queueId"])
    data = error.json["data"]
    assert data["smtpResponseCode"] == 451
    assert data["job"]["attemptsMade"] == 1 and data["job"]["nextAttempt"]
    assert len(smtp_sink.to(to)) == 1
    entry = outbox(api, queued["queueId"])
    assert entry["state"] == "sent"
    assert [a["outcome"] for a in entry["attemptsLog"]] == ["deferred", "sent"]


def test_attempts_exhausted_gives_message_failed(
    api: httpx.Client, account: str, webhook_receiver: WebhookReceiver
) -> None:
    queued = submit(api, account, {"to": [{"address": rcpt("defer")}], "text": "x",
                                   "deliveryAttempts": 2})
    wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queued["queueId"]),
             timeout=20, message="messageFailed after 2 attempts")
    errors = webhook_receiver.received("messageDeliveryError", queueId=queued["queueId"])
    assert [e.json["data"]["job"]["attemptsMade"] for e in errors] == [1, 2]
    assert outbox(api, queued["queueId"])["state"] == "failed"


def test_scheduled_message_waits_for_send_at(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("sched")
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    queued = submit(api, account, {"to": [{"address": to}], "text": "x",
                                   "sendAt": send_at.isoformat()})
    assert datetime.fromisoformat(queued["sendAt"]) == send_at.replace(
        microsecond=send_at.microsecond // 1000 * 1000)
    assert outbox(api, queued["queueId"])["state"] == "queued"
    time.sleep(2)
    assert smtp_sink.to(to) == []
    [received] = wait_for(lambda: smtp_sink.to(to), timeout=10, message="scheduled delivery")
    assert received.at >= send_at.timestamp()
    assert received.at - send_at.timestamp() < 2.0


def test_cancelled_message_is_never_sent(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("cancel")
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    queued = submit(api, account, {"to": [{"address": to}], "text": "x", "sendAt": send_at.isoformat()})
    response = api.delete(f"/v1/outbox/{queued['queueId']}")
    assert response.status_code == 200 and response.json() == {"deleted": True}
    # EmailEngine answers a second cancel, and an unknown id, with 200 deleted: false.
    again = api.delete(f"/v1/outbox/{queued['queueId']}")
    assert again.status_code == 200 and again.json() == {"deleted": False}
    time.sleep(3.5)
    assert smtp_sink.to(to) == []
    assert outbox(api, queued["queueId"])["state"] == "cancelled"
    unknown = api.delete("/v1/outbox/doesnotexist")
    assert unknown.status_code == 200 and unknown.json() == {"deleted": False}


def test_idempotency_key_returns_first_answer(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("idem")
    body = {"to": [{"address": to}], "subject": "once", "text": "x"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = submit(api, account, body, headers=key)
    second = submit(api, account, body, headers=key)
    # As EmailEngine's: the same answer, marked as replayed.
    assert first.pop("idempotency")["status"] == "MISS" and second.pop("idempotency")["status"] == "HIT"
    assert first == second
    conflict = api.post(f"/v1/account/{account}/submit", json={**body, "subject": "other"}, headers=key)
    assert conflict.status_code == 409 and conflict.json()["field"] == "Idempotency-Key"
    wait_for(lambda: smtp_sink.to(to), message="delivery")
    time.sleep(1)
    assert len(smtp_sink.to(to)) == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"to": [{"address": "not-an-address"}], "text": "x"}, 400, "to[0].address"),
        ({"to": "someone@example.org", "text": "x"}, 400, "to"),
        ({"text": "no recipients"}, 400, "to"),
        ({"to": [{"address": "a@example.org"}], "subject": "x\r\nBcc: evil@example.org"}, 400, "subject"),
        ({"to": [{"address": "a@example.org"}], "headers": {"X-Evil": "a\nBcc: b@example.org"}}, 400,
         "headers.X-Evil"),
        ({"to": [{"address": "a@example.org"}], "headers": {"Bad Name": "v"}}, 400, "headers.Bad Name"),
        ({"to": [{"address": "a@example.org"}], "sendAt": "tomorrow"}, 400, "sendAt"),
        ({"to": [{"address": "a@example.org"}], "deliveryAttempts": 0}, 400, "deliveryAttempts"),
        ({"to": [{"address": "a@example.org"}], "attachments": [{"content": "x", "contentType": "nope"}]},
         400, "attachments[0].contentType"),
        ({"to": [{"address": "a@example.org"}], "raw": "%%%notbase64"}, 400, "raw"),
        ({"to": [{"address": "a@example.org"}], "reference": {"message": "AAAA", "action": "reply"}},
         404, "reference.message"),
    ],
)
def test_bad_submit_bodies_are_refused_and_queue_nothing(
    api: httpx.Client, account: str, body: dict[str, Any], status: int, field: str
) -> None:
    before = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    response = api.post(f"/v1/account/{account}/submit", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["statusCode"] == status and error["field"] == field and error["message"]
    after = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    assert after == before


def test_malformed_json_and_unknown_account(api: httpx.Client, account: str) -> None:
    response = api.post(f"/v1/account/{account}/submit", content=b"{not json",
                        headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["statusCode"] == 400
    missing = api.post("/v1/account/nobody-here/submit", json={"to": [{"address": "a@example.org"}]})
    assert missing.status_code == 404 and missing.json()["field"] == "account"


def test_raw_submit_strips_bcc_and_adds_missing_headers(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to, hidden = rcpt("raw"), rcpt("rawbcc")
    raw = (f"From: {account}@sender.test\r\nTo: {to}\r\nBcc: {hidden}\r\nSubject: raw one\r\n\r\n"
           "raw body\r\n").encode()
    queued = submit(api, account, {"raw": base64.b64encode(raw).decode()})
    [received] = wait_for(lambda: smtp_sink.to(to), message="raw delivery")
    assert sorted(received.rcpt_tos) == sorted([to, hidden])
    assert received.message["Bcc"] is None
    assert received.message["Message-ID"] == queued["messageId"]
    assert received.message["Date"] and received.message["MIME-Version"] == "1.0"
    assert received.message.get_content().strip() == "raw body"


def test_timeline_tells_the_whole_story(
    api: httpx.Client, account: str, webhook_receiver: WebhookReceiver
) -> None:
    queued = submit(api, account, {"to": [{"address": rcpt("defer1")}], "text": "story"})
    queue_id = queued["queueId"]
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id), timeout=20,
             message="messageSent")

    def story() -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = api.get(f"/v1/outbox/{queue_id}/timeline").json()["timeline"]
        delivered = [s for s in steps if s["step"] == "webhook" and s["detail"].get("status") == 200]
        return steps if len(delivered) >= 2 else []

    steps = wait_for(story, message="both webhook calls recorded")
    delivery = [s for s in steps if s["step"] != "webhook"]
    assert [s["step"] for s in delivery] == ["queued", "deferred", "sent"]
    assert delivery[1]["detail"]["smtpResponseCode"] == 451 and delivery[2]["detail"]["smtpResponseCode"] == 250
    hooks = {s["detail"]["event"] for s in steps if s["step"] == "webhook"}
    assert {"messageDeliveryError", "messageSent"} <= hooks
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps)
    assert api.get(f"/v1/outbox/{queue_id}").json()["timeline"][0]["step"] == "queued"
