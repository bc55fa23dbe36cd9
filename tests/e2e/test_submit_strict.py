"""Strict submit: nothing EmailEngine accepts is silently dropped.

Unknown fields and EmailEngine fields mailgate cannot honour are refused with
400 naming the field (and nothing is queued); ``dryRun`` builds the message and
sends nothing; ``dsn``, ``gateway`` and ``sentMailPath`` reach the outbox row for
the sender; replies quote the original when ``inline`` asks for it.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.test_imap_sync import add_imap_account, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.stack import Stack, wait_for


def rcpt(tag: str = "r") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.net"


def total(api: httpx.Client, account: str) -> int:
    answer: int = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    return answer




UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    ({"proxy": "socks5://proxy.example.com:1080"}, "proxy"),
    ({"localAddress": "127.0.0.2"}, "localAddress"),
    ({"locale": "fr"}, "locale"),
    ({"tz": "Europe/Tallinn"}, "tz"),
    ({"reference": {"message": "AAAAAQAACnA", "threadId": "1"}}, "reference.threadId"),
    ({"attachments": [{"reference": "AAAAAQAACnAcde"}]}, "attachments[0].reference"),
]

UNKNOWN: list[tuple[dict[str, Any], str]] = [
    ({"sendLater": True}, "sendLater"),
    ({"to": [{"address": "a@example.org", "nickname": "A"}]}, "to[0].nickname"),
    ({"reference": {"message": "AAAAAQAACnA", "quote": True}}, "reference.quote"),
    ({"dsn": {"return": "full", "notfy": ["failure"]}}, "dsn.notfy"),
]

INVALID: list[tuple[dict[str, Any], str]] = [
    ({"dsn": {"notify": ["failure"]}}, "dsn.return"),
    ({"dsn": {"return": "body"}}, "dsn.return"),
    ({"dsn": {"return": "full", "notify": ["sometimes"]}}, "dsn.notify[0]"),
    ({"dsn": {"return": "full", "notify": ["never", "failure"]}}, "dsn.notify"),
    ({"dsn": {"return": "full", "recipient": "not an address"}}, "dsn.recipient"),
    ({"raw": "TUlNRS1WZXJzaW9uOiAxLjANCg==", "text": "both"}, "text"),
    ({"reference": {"message": "AAAAAQAACnA", "action": "reply", "forwardAttachments": True}},
     "reference.forwardAttachments"),
    ({"dryRun": "perhaps"}, "dryRun"),
    # A merge's recipients are its entries; a list belongs to a merge; tracking links need an http(s) base.
    ({"mailMerge": [{"to": {"address": "a@example.org"}}]}, "to"),
    ({"listId": "test-list"}, "listId"),
    ({"trackOpens": "sometimes"}, "trackOpens"),
    ({"baseUrl": "ftp://customer123.myservice.com"}, "baseUrl"),
    ({"attachments": [{"filename": "empty.txt"}]}, "attachments[0].content"),
]


def test_unsupported_unknown_and_invalid_fields_are_refused_by_name_and_queue_nothing(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("strict")
    base = {"to": [{"address": to}], "subject": "strict", "text": "x"}
    before = total(api, account)
    for extra, field in UNSUPPORTED + UNKNOWN + INVALID:
        response = api.post(f"/v1/account/{account}/submit", json={**base, **extra})
        assert response.status_code == 400, (extra, response.text)
        error = response.json()
        assert error["statusCode"] == 400 and error["error"] == "Bad Request", error
        assert error["code"] == "InputValidationError", error
        assert error["field"] == field, (extra, error)
        # EmailEngine's key is the last step of the path (Joi's context.key).
        assert error["fields"][0]["key"] == re.split(r"[.\[]", field.rstrip("]"))[-1], error
        if (extra, field) in UNSUPPORTED:
            assert "not supported" in error["message"], error
    assert total(api, account) == before
    assert smtp_sink.to(to) == []


def test_fields_that_ask_for_nothing_unsupported_are_accepted(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("harmless")
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": to}], "subject": "harmless", "text": "x",
        "trackingEnabled": False, "trackOpens": False, "trackClicks": False, "render": False,
        "proxy": None, "locale": "", "attachments": [
            {"filename": "a.txt", "content": base64.b64encode(b"abc").decode(), "encoding": "base64"}],
    })
    assert response.status_code == 200, response.text
    [received] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    [part] = list(received.message.iter_attachments())
    assert part.get_content() == b"abc"


def test_dry_run_builds_the_message_and_stores_and_sends_nothing(
    api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("dry")
    before = total(api, account)
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"name": "Nyan Cat", "address": to}], "subject": "Only a preview", "text": "Hello", "dryRun": True,
    })
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["response"] == "Dry run"
    assert "queueId" not in answer and "sendAt" not in answer
    built = email.message_from_bytes(base64.b64decode(answer["preview"]), policy=email.policy.default)
    assert built["Subject"] == "Only a preview" and built["To"] == f"Nyan Cat <{to}>"
    assert built["Message-ID"] == answer["messageId"]
    assert built.get_content().strip() == "Hello"
    time.sleep(0.5)  # a queued message would reach the sink by now
    assert total(api, account) == before and smtp_sink.to(to) == []
    unknown = api.post(f"/v1/account/nobody-{uuid.uuid4().hex[:6]}/submit",
                       json={"to": [{"address": to}], "text": "x", "dryRun": True})
    assert unknown.status_code == 404 and unknown.json()["code"] == "AccountNotFound", unknown.text


def test_dsn_gateway_and_sent_mail_path_are_stored_for_the_sender(
    api: httpx.Client, account: str, stack: Stack, smtp_sink: SmtpSink
) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    stack.rows("INSERT INTO gateways (id, name, host, port) VALUES ($1, 'test', '127.0.0.1', $2)",
        gateway, smtp_sink.port)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "to": [{"address": rcpt("dsn")}], "subject": "options", "text": "x", "sendAt": later,
        "dsn": {"id": "order-4815-notify", "return": "headers", "notify": "failure",
                "recipient": "bounces@example.com"},
        "gateway": gateway, "sentMailPath": "Sent Mail",
    }
    response = api.post(f"/v1/account/{account}/submit", json=body)
    assert response.status_code == 200, response.text
    queue_id = response.json()["queueId"]
    [row] = stack.rows("SELECT options FROM outbox WHERE id = $1", queue_id)
    options = json.loads(row["options"]) if isinstance(row["options"], str) else row["options"]
    assert options == {
        "dsn": {"id": "order-4815-notify", "return": "headers", "notify": ["failure"],
                "recipient": "bounces@example.com"},
        "gateway": gateway, "sentMailPath": "Sent Mail",
    }
    entry = api.get(f"/v1/outbox/{queue_id}").json()
    assert entry["gateway"] == gateway and entry["progress"] == {"status": "queued"}
    assert api.delete(f"/v1/outbox/{queue_id}").json() == {"deleted": True}

    before = total(api, account)
    missing = api.post(f"/v1/account/{account}/submit", json={**body, "gateway": "no-such-gateway"})
    assert missing.status_code == 404, missing.text
    assert missing.json()["field"] == "gateway" and missing.json()["code"] == "GatewayNotFound"
    assert total(api, account) == before


@pytest.fixture
def original(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> dict[str, Any]:
    """A connected IMAP account with one text+html message in INBOX."""
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    tag = uuid.uuid4().hex[:8]
    message_id = f"<quote-{tag}@example.org>"
    msg = email.message.EmailMessage()
    msg["From"] = f"Ann <ann-{tag}@example.org>"
    msg["To"] = f"{user}@dovecot.test"
    msg["Subject"] = f"Question {tag}"
    msg["Message-ID"] = message_id
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0000"
    msg.set_content("Are we meeting?\nAt noon?\n")
    msg.add_alternative("<p>Are we <b>meeting</b>?</p>\n", subtype="html")
    dovecot.deliver(user, msg.as_bytes())

    def listed() -> dict[str, Any] | None:
        page = api.get(f"/v1/account/{account}/messages", params={"path": "INBOX"}).json()
        return next((m for m in page["messages"] if m["messageId"] == message_id), None)

    entry = wait_for(listed, timeout=15, message="message indexed")
    return {"account": account, "id": entry["id"], "messageId": message_id, "sender": f"ann-{tag}@example.org"}


def delivered(smtp_sink: SmtpSink, address: str) -> Received:
    found: list[Received] = wait_for(lambda: smtp_sink.to(address), timeout=15, message=f"delivery to {address}")
    return found[-1]


def test_reply_quoting_message_id_check_and_ignore_missing(
    api: httpx.Client, original: dict[str, Any], smtp_sink: SmtpSink
) -> None:
    account = original["account"]
    answer = api.post(f"/v1/account/{account}/submit", json={
        "reference": {"message": original["id"], "action": "reply", "inline": True,
                      "messageId": original["messageId"]},
        "text": "Yes, at noon.",
    })
    assert answer.status_code == 200, answer.text
    assert answer.json()["reference"] == {"message": original["id"], "success": True}
    reply = delivered(smtp_sink, original["sender"]).message
    assert reply["In-Reply-To"] == original["messageId"]
    plain = reply.get_body(preferencelist=("plain",))
    assert plain is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert text.startswith("Yes, at noon.")
    assert "Ann <" in text and "wrote:" in text
    assert "> Are we meeting?\n> At noon?" in text
    html = reply.get_body(preferencelist=("html",))
    assert html is not None
    assert '<blockquote type="cite"><p>Are we <b>meeting</b>?</p>' in html.get_content()

    # Without inline (EmailEngine's default) only the new text goes out.
    plain_to = rcpt("plain")
    api.post(f"/v1/account/{account}/submit", json={
        "reference": {"message": original["id"]}, "to": [{"address": plain_to}], "text": "Short."})
    short = delivered(smtp_sink, plain_to).message
    assert short.get_content().strip() == "Short." and short["In-Reply-To"] == original["messageId"]

    before = total(api, account)
    mismatch = api.post(f"/v1/account/{account}/submit", json={
        "reference": {"message": original["id"], "messageId": "<someone-else@example.org>"}, "text": "x"})
    assert mismatch.status_code == 404, mismatch.text
    assert mismatch.json()["code"] == "MessageNotFound" and mismatch.json()["field"] == "reference.messageId"
    assert total(api, account) == before

    # ignoreMissing: sent as a new message, and the answer says the reference failed.
    lonely_to = rcpt("lonely")
    lonely = api.post(f"/v1/account/{account}/submit", json={
        "reference": {"message": "AAAAAAAAAAAAAAAAAAAA", "ignoreMissing": True},
        "to": [{"address": lonely_to}], "subject": "new thread", "text": "x"})
    assert lonely.status_code == 200, lonely.text
    assert lonely.json()["reference"] == {"message": "AAAAAAAAAAAAAAAAAAAA", "success": False,
                                          "error": "Referenced message was not found"}
    sent = delivered(smtp_sink, lonely_to).message
    assert sent["In-Reply-To"] is None and sent["References"] is None
