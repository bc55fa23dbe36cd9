"""Reading messages over REST and replying/forwarding with ``reference``, against a real Dovecot."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.e2e.test_imap_sync import add_imap_account, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import Received, SmtpSink
from tests.support.stack import wait_for

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def mailbox(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> dict[str, Any]:
    """A connected IMAP account with one rich message in INBOX (and its listing entry)."""
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    tag = uuid.uuid4().hex[:8]
    sender = f"jurgen-{tag}@example.org"
    msg = EmailMessage()
    msg["From"] = f"Jürgen Ü <{sender}>"
    msg["To"] = f"{user}@dovecot.test, Bob <bob-{tag}@example.org>"
    msg["Cc"] = f"carol-{tag}@example.org"
    msg["Subject"] = f"Grüße aus Köln {tag}"
    msg["Message-ID"] = message_id = f"<orig-{tag}@example.org>"
    msg["References"] = f"<root-{tag}@example.org>"
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0000"
    msg.set_content("Hallo, schöne Grüße aus Köln!\n")
    msg.add_alternative("<p>Hallo, <b>schöne</b> Grüße!</p>\n", subtype="html")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="bild.png")
    dovecot.deliver(user, msg.as_bytes())

    def listed() -> dict[str, Any] | None:
        page = api.get(f"/v1/account/{account}/messages", params={"path": "INBOX"}).json()
        return next((m for m in page["messages"] if m["messageId"] == message_id), None)

    entry = wait_for(listed, timeout=15, message="message indexed")
    return {"account": account, "user": user, "id": entry["id"], "messageId": message_id,
            "sender": sender, "tag": tag, "subject": msg["Subject"]}


def flags_of(api: httpx.Client, account: str, message: str) -> list[str]:
    page = api.get(f"/v1/account/{account}/messages", params={"path": "INBOX"}).json()
    return next(m["flags"] for m in page["messages"] if m["id"] == message)


def outbox_total(api: httpx.Client, account: str) -> int:
    total: int = api.get("/v1/outbox", params={"account": account, "state": "all"}).json()["total"]
    return total


def submit(api: httpx.Client, account: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/v1/account/{account}/submit", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def delivered(smtp_sink: SmtpSink, address: str) -> Received:
    found: list[Received] = wait_for(lambda: smtp_sink.to(address), timeout=15,
                                     message=f"delivery to {address}")
    return found[-1]


def test_read_message_and_download_attachment(api: httpx.Client, mailbox: dict[str, Any]) -> None:
    account, message = mailbox["account"], mailbox["id"]
    response = api.get(f"/v1/account/{account}/message/{message}")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["id"] == message and data["path"] == "INBOX" and data["uid"] >= 1
    assert data["subject"] == mailbox["subject"]
    assert data["messageId"] == mailbox["messageId"]
    assert data["from"] == {"name": "Jürgen Ü", "address": mailbox["sender"]}
    assert data["cc"] == [{"address": f"carol-{mailbox['tag']}@example.org"}]
    assert data["headers"]["subject"] == [mailbox["subject"]]
    assert data["text"]["plain"] == "Hallo, schöne Grüße aus Köln!\n"
    assert data["text"]["html"] == "<p>Hallo, <b>schöne</b> Grüße!</p>\n"
    # Reading over the API must not mark the message as read.
    assert data["unseen"] is True and "\\Seen" not in data["flags"]
    [attachment] = data["attachments"]
    assert attachment["filename"] == "bild.png" and attachment["contentType"] == "image/png"
    assert attachment["embedded"] is False and attachment["encodedSize"] > len(PNG)

    download = api.get(f"/v1/account/{account}/attachment/{attachment['id']}")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("image/png")
    assert download.content == PNG


def test_unknown_message_and_attachment_are_404(api: httpx.Client, mailbox: dict[str, Any]) -> None:
    account = mailbox["account"]
    missing = api.get(f"/v1/account/{account}/message/AAAAAAAAAAAAAAAAAAAA")
    assert missing.status_code == 404
    assert missing.json()["field"] == "message" and missing.json()["statusCode"] == 404
    bad = api.get(f"/v1/account/{account}/attachment/nonsense")
    assert bad.status_code == 404 and bad.json()["field"] == "attachment"
    # Another account cannot read this account's message by its id.
    other = api.get(f"/v1/account/nobody-{uuid.uuid4().hex[:6]}/message/{mailbox['id']}")
    assert other.status_code == 404


def test_reply_is_threaded_and_marks_the_original_answered(
    api: httpx.Client, mailbox: dict[str, Any], smtp_sink: SmtpSink
) -> None:
    account, tag = mailbox["account"], mailbox["tag"]
    submit(api, account, {"reference": {"message": mailbox["id"], "action": "reply-all"},
                          "text": "Danke!"})
    # No "to" given: the reply goes to the original sender, the others are copied.
    received = delivered(smtp_sink, mailbox["sender"])
    reply = received.message
    assert reply["In-Reply-To"] == mailbox["messageId"]
    assert reply["References"].split() == [f"<root-{tag}@example.org>", mailbox["messageId"]]
    assert reply["Subject"] == f"Re: {mailbox['subject']}"
    assert sorted(received.rcpt_tos) == sorted(
        [mailbox["sender"], f"bob-{tag}@example.org", f"carol-{tag}@example.org"])
    # The account's own address is not copied on its own reply.
    assert f"{mailbox['user']}@dovecot.test" not in received.rcpt_tos
    wait_for(lambda: "\\Answered" in flags_of(api, account, mailbox["id"]), timeout=15,
             message="original flagged \\Answered")


def test_forward_inline_and_with_attachments(
    api: httpx.Client, mailbox: dict[str, Any], smtp_sink: SmtpSink
) -> None:
    account, tag = mailbox["account"], mailbox["tag"]
    inline_to, attached_to = f"dan-{tag}@example.net", f"eve-{tag}@example.net"
    submit(api, account, {"reference": {"message": mailbox["id"], "action": "forward", "inline": True},
                          "to": [{"address": inline_to}], "text": "Schau mal"})
    # EmailEngine's forward without inline: only the new text, plus the original's
    # attachments when forwardAttachments asks for them.
    submit(api, account, {"reference": {"message": mailbox["id"], "action": "forward",
                                        "forwardAttachments": True},
                          "to": [{"address": attached_to}], "subject": "as attachment", "text": "Anbei"})

    inline = delivered(smtp_sink, inline_to).message
    assert inline["Subject"] == f"Fwd: {mailbox['subject']}"
    plain = inline.get_body(preferencelist=("plain",))
    assert plain is not None
    text = plain.get_content()
    assert text.startswith("Schau mal")
    assert "---------- Forwarded message ---------" in text
    assert f"From: Jürgen Ü <{mailbox['sender']}>" in text
    assert "Hallo, schöne Grüße aus Köln!" in text
    html = inline.get_body(preferencelist=("html",))
    assert html is not None and "<b>schöne</b>" in html.get_content()

    attached = delivered(smtp_sink, attached_to).message
    assert attached["Subject"] == "as attachment"
    assert attached["References"].split()[-1] == mailbox["messageId"] and attached["In-Reply-To"] is None
    body = attached.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Anbei"
    [part] = list(attached.iter_attachments())
    assert part.get_filename() == "bild.png" and part.get_content() == PNG

    wait_for(lambda: "$Forwarded" in flags_of(api, account, mailbox["id"]), timeout=15,
             message="original flagged $Forwarded")


def test_reference_to_missing_message_is_404_and_queues_nothing(
    api: httpx.Client, mailbox: dict[str, Any]
) -> None:
    account = mailbox["account"]
    before = outbox_total(api, account)
    for action in ("reply", "forward"):
        response = api.post(f"/v1/account/{account}/submit", json={
            "to": [{"address": "someone@example.org"}], "text": "x",
            "reference": {"message": "AAAAAAAAAAAAAAAAAAAA", "action": action},
        })
        assert response.status_code == 404, response.text
        assert response.json()["field"] == "reference.message"
    assert outbox_total(api, account) == before
