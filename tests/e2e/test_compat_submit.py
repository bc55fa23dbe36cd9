"""EmailEngine's own documented submit and outbox examples, sent unchanged.

The request bodies are the examples of EmailEngine 2.79.2's API reference
(``SubmitMessage`` and its field examples); the checks are the response fields
that reference documents.  Nothing here is mailgate-specific.
"""

from __future__ import annotations

import base64
import email
import email.policy
import uuid
from typing import Any

import httpx

from tests.support.smtp_sink import Received, SmtpSink
from tests.support.stack import wait_for

# SubmitMessage's documented example.
SUBMIT_EXAMPLE: dict[str, Any] = {
    "to": [{"name": "Nyan Cat", "address": "nyan.cat@example.com"}],
    "subject": "What a wonderful message!",
    "text": "Hello from myself!",
    "html": "<p>Hello from myself!</p>",
    "attachments": [{
        "filename": "transparent.gif",
        "content": "R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs=",
        "contentType": "image/gif",
    }],
}
# The documented examples of the other fields a plain send uses.
FIELD_EXAMPLES: dict[str, Any] = {
    "from": {"name": "From Me", "address": "sender@example.com"},
    "replyTo": [{"name": "From Me", "address": "sender@example.com"}],
    "headers": {"X-My-Custom-Header": "Custom header value"},
    "sendAt": "2021-07-08T07:06:34.336Z",
    "deliveryAttempts": 10,
    "copy": None,
    "dsn": {"id": "order-4815-notify", "return": "headers", "notify": ["failure", "delay"],
            "recipient": "bounces@example.com"},
}
RAW_EXAMPLE = "TUlNRS1WZXJzaW9uOiAxLjANClN1YmplY3Q6IGhlbGxvIHdvcmxkDQoNCkhlbGxvIQ0K"
ENVELOPE_EXAMPLE = {"from": "sender@example.com", "to": ["recipient@example.com"]}
OUTBOX_ENTRY_FIELDS = {"queueId", "account", "source", "messageId", "envelope", "subject", "gateway",
                       "idempotencyKey", "created", "scheduled", "nextAttempt", "attemptsMade",
                       "attempts", "progress"}


def delivered(smtp_sink: SmtpSink, message_id: str) -> Received:
    found: list[Received] = wait_for(lambda: smtp_sink.with_header("Message-ID", message_id),
                                     timeout=15, message=f"delivery of {message_id}")
    return found[-1]


def test_documented_submit_example_is_queued_and_delivered(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    response = api.post(f"/v1/account/{account}/submit", json={**SUBMIT_EXAMPLE, **FIELD_EXAMPLES},
                        headers={"Idempotency-Key": f"submit-{uuid.uuid4().hex}"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response"] == "Queued for delivery"
    assert answer["messageId"].startswith("<") and answer["queueId"] and answer["sendAt"]
    assert answer["idempotency"]["status"] == "MISS"

    received = delivered(smtp_sink, answer["messageId"])
    assert received.rcpt_tos == ["nyan.cat@example.com"] and received.mail_from == "sender@example.com"
    message = received.message
    assert message["Subject"] == "What a wonderful message!"
    assert message["X-My-Custom-Header"] == "Custom header value"
    assert message["Reply-To"] == "From Me <sender@example.com>"
    [gif] = list(message.iter_attachments())
    assert gif.get_filename() == "transparent.gif" and gif.get_content_type() == "image/gif"

    entry = api.get(f"/v1/outbox/{answer['queueId']}").json()
    assert OUTBOX_ENTRY_FIELDS <= set(entry), entry
    assert entry["messageId"] == answer["messageId"] and entry["source"] == "api"
    assert entry["envelope"] == {"from": "sender@example.com", "to": ["nyan.cat@example.com"]}
    assert entry["gateway"] is None and entry["idempotencyKey"].startswith("submit-")
    wait_for(lambda: api.get(f"/v1/outbox/{answer['queueId']}").json()["progress"]["status"] == "submitted",
             timeout=15, message="progress submitted")


def test_documented_raw_and_envelope_example(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> None:
    response = api.post(f"/v1/account/{account}/submit",
                        json={"raw": RAW_EXAMPLE, "envelope": ENVELOPE_EXAMPLE})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response"] == "Queued for delivery" and answer["queueId"]
    received = delivered(smtp_sink, answer["messageId"])
    assert received.rcpt_tos == ["recipient@example.com"]
    assert received.message["Subject"] == "hello world"


def test_documented_dry_run_answers_a_preview(api: httpx.Client, account: str) -> None:
    response = api.post(f"/v1/account/{account}/submit", json={**SUBMIT_EXAMPLE, "dryRun": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"response", "messageId", "preview"}
    preview = email.message_from_bytes(base64.b64decode(answer["preview"]), policy=email.policy.default)
    assert preview["Message-ID"] == answer["messageId"]
    assert preview["Subject"] == "What a wonderful message!"


def test_validation_errors_have_emailengines_shape(api: httpx.Client, account: str) -> None:
    response = api.post(f"/v1/account/{account}/submit", json={**SUBMIT_EXAMPLE, "sendLater": True})
    assert response.status_code == 400
    error = response.json()
    assert error["statusCode"] == 400 and error["error"] == "Bad Request" and error["message"]
    assert error["fields"] == [{"message": "is not allowed (unknown field)", "key": "sendLater"}]
    assert error["code"] == "InputValidationError"

    missing = api.post(f"/v1/account/no-such-{uuid.uuid4().hex[:6]}/submit", json=SUBMIT_EXAMPLE)
    assert missing.status_code == 404
    assert missing.json()["statusCode"] == 404 and missing.json()["error"] == "Not Found"


def test_documented_outbox_delete_answers(api: httpx.Client, account: str) -> None:
    response = api.post(f"/v1/account/{account}/submit",
                        json={**SUBMIT_EXAMPLE, "sendAt": "2099-07-08T07:06:34.336Z"})
    queue_id = response.json()["queueId"]
    listed = api.get("/v1/outbox", params={"account": account}).json()
    assert {"total", "page", "pages", "messages"} <= set(listed)
    [entry] = [m for m in listed["messages"] if m["queueId"] == queue_id]
    assert OUTBOX_ENTRY_FIELDS <= set(entry) and entry["progress"] == {"status": "queued"}
    assert api.delete(f"/v1/outbox/{queue_id}").json() == {"deleted": True}
    assert api.delete(f"/v1/outbox/{queue_id}").json() == {"deleted": False}
    assert api.delete("/v1/outbox/1869c5692565f756b33").json() == {"deleted": False}
