"""Mailbox and message operations over REST, run by imap-sync against a real Dovecot:
flags, move, delete, search, upload, folders, source and text, sending a draft.

One account (one Dovecot user) serves the module; each test works on messages
with its own tag in the subject, so the tests do not see each other's mail.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.e2e.test_imap_sync import hook, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver

FOLDERS = ["INBOX", "Archive", "Trash", "Drafts", "Sent"]


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=20, headers=stack.auth_headers) as api:
        yield api


@pytest.fixture(scope="module")
def box(client: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> dict[str, str]:
    user = dovecot.new_user()
    account = f"ops-{uuid.uuid4().hex[:10]}"
    response = client.post("/v1/account", json={
        "account": account, "name": "Ops Tester", "email": f"{user}@dovecot.test", "path": FOLDERS,
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "tls": {"rejectUnauthorized": False},
                 "auth": {"user": user, "pass": dovecot.password}},
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": user, "pass": "smtp-password"}},
    })
    assert response.status_code == 200, response.text
    wait_connected(client, account)
    return {"account": account, "user": user}


def message(subject: str, *, sender: str = "ann@example.org", to: str = "bob@example.org",
            body: str = "hello\n", date: str = "Mon, 05 Jan 2026 10:00:00 +0000",
            headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.org>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def listing(api: httpx.Client, account: str, path: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/account/{account}/messages", params={"path": path, "pageSize": 200})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def indexed(api: httpx.Client, account: str, path: str, subject: str) -> dict[str, Any]:
    """The listing entry of the message with ``subject`` in ``path``, once indexed."""
    found: dict[str, Any] = wait_for(
        lambda: next((m for m in listing(api, account, path) if m["subject"] == subject), None),
        timeout=15, message=f"{subject!r} indexed in {path}")
    return found


def deliver(api: httpx.Client, dovecot: Dovecot, box: dict[str, str], subject: str, path: str = "INBOX",
            **fields: Any) -> dict[str, Any]:
    dovecot.deliver(box["user"], message(subject, **fields), mailbox=path)
    return indexed(api, box["account"], path, subject)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_mark_read_and_flag_reaches_the_server_index_and_webhooks(
    client: httpx.Client, dovecot: Dovecot, box: dict[str, str], webhook_receiver: WebhookReceiver
) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    entry = deliver(client, dovecot, box, f"read me {tag}")
    assert entry["unseen"] is True
    answer = ok(client.put(f"/v1/account/{account}/message/{entry['id']}",
                           json={"flags": {"add": ["\\Seen", "\\Flagged"]}}))
    assert answer == {"flags": {"add": True}}
    assert "\\Seen" in dovecot.doveadm("fetch", "-u", box["user"], "flags", "mailbox", "INBOX",
                                       "subject", tag)
    updated = hook(webhook_receiver, "messageUpdated", account, id=entry["id"])
    assert set(updated["data"]["changes"]["flags"]["added"]) == {"\\Seen", "\\Flagged"}
    wait_for(lambda: ok(client.get(f"/v1/account/{account}/message/{entry['id']}"))["unseen"] is False,
             timeout=10, message="\\Seen in GET message")

    answer = ok(client.put(f"/v1/account/{account}/message/{entry['id']}",
                           json={"flags": {"delete": "\\Flagged", "set": None}}))
    assert answer == {"flags": {"delete": True}}
    wait_for(lambda: not ok(client.get(f"/v1/account/{account}/message/{entry['id']}"))["flagged"],
             timeout=10, message="\\Flagged removed")


def test_bulk_update_by_search(client: httpx.Client, dovecot: Dovecot, box: dict[str, str]) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    for n in range(3):
        deliver(client, dovecot, box, f"bulk {n} {tag}")
    answer = ok(client.put(f"/v1/account/{account}/messages", params={"path": "INBOX"},
                           json={"search": {"subject": tag}, "update": {"flags": {"add": ["\\Answered"]}}}))
    assert answer == {"flags": {"add": True}}
    wait_for(lambda: all(m["answered"] for m in listing(client, account, "INBOX") if tag in m["subject"]),
             timeout=10, message="all three answered")


def test_search_by_each_criterion(client: httpx.Client, dovecot: Dovecot, box: dict[str, str]) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    seeds = {
        "alpha": dict(sender=f"carol-{tag}@example.org", to=f"dan-{tag}@example.org", body="the walrus\n",
                      date="Mon, 05 Jan 2026 10:00:00 +0000", headers={"X-Campaign": f"spring-{tag}"}),
        "beta": dict(sender="erin@example.org", to="frank@example.org", body="x" * 20_000 + "\n",
                     date="Sat, 01 Aug 2026 10:00:00 +0000",
                     headers={"Cc": f"gina-{tag}@example.org", "Bcc": f"hal-{tag}@example.org"}),
        "gamma": dict(sender="ivy@example.org", to="jon@example.org", body="Grüße aus Köln\n",
                      date="Tue, 01 Dec 2026 10:00:00 +0000"),
    }
    entries = {name: deliver(client, dovecot, box, f"{name} Größe {tag}", **fields)
               for name, fields in seeds.items()}
    ok(client.put(f"/v1/account/{account}/message/{entries['gamma']['id']}",
                  json={"flags": {"add": ["\\Seen", "\\Flagged"]}}))

    def found(**search: Any) -> set[str]:
        page = ok(client.post(f"/v1/account/{account}/search", params={"path": "INBOX"},
                              json={"search": {"subject": tag, **search}}))
        assert page["total"] == len(page["messages"]) and page["page"] == 0
        return {m["subject"].split()[0] for m in page["messages"]}

    assert found() == {"alpha", "beta", "gamma"}
    assert found(subject=f"Größe {tag}") == {"alpha", "beta", "gamma"}  # non-ASCII: CHARSET UTF-8
    assert found(**{"from": f"carol-{tag}"}) == {"alpha"}
    assert found(to=f"dan-{tag}@example.org") == {"alpha"}
    assert found(cc=f"gina-{tag}") == {"beta"}
    assert found(bcc=f"hal-{tag}") == {"beta"}
    assert found(body="walrus") == {"alpha"}
    assert found(body="Köln") == {"gamma"}
    assert found(header={"X-Campaign": f"spring-{tag}"}) == {"alpha"}
    assert found(larger=10_000) == {"beta"}
    assert found(smaller=10_000) == {"alpha", "gamma"}
    assert found(sentSince="2026-07-01") == {"beta", "gamma"}
    assert found(sentBefore="2026-07-01") == {"alpha"}
    assert found(since="2000-01-01") == {"alpha", "beta", "gamma"}  # delivery date: today
    assert found(before="2000-01-01") == set()
    assert found(seen=True) == {"gamma"}
    assert found(unseen=True) == {"alpha", "beta"}
    assert found(flagged=True) == {"gamma"}
    assert found(flagged=False, answered=False, draft=False, deleted=False) == {"alpha", "beta"}
    assert found(uid=f"{entries['beta']['uid']}:{entries['gamma']['uid']}") == {"beta", "gamma"}

    paged = ok(client.post(f"/v1/account/{account}/search", params={"path": "INBOX", "pageSize": 2, "page": 1},
                           json={"search": {"subject": tag}}))
    assert paged["total"] == 3 and paged["pages"] == 2 and len(paged["messages"]) == 1
    # Newest first, like the listing: the last page holds the oldest.
    assert paged["messages"][0]["id"] == entries["alpha"]["id"]


def test_search_refusals_name_the_field(client: httpx.Client, box: dict[str, str]) -> None:
    account = box["account"]
    unknown = client.post(f"/v1/account/{account}/search", params={"path": "INBOX"},
                          json={"search": {"sender": "x"}})
    assert unknown.status_code == 400, unknown.text
    assert "sender" in unknown.json()["message"]
    thread = client.post(f"/v1/account/{account}/search", params={"path": "INBOX"},
                         json={"search": {"threadId": "1278455344230334865"}})
    assert thread.status_code == 400, thread.text
    assert thread.json()["field"] == "search.threadId"
    bad_date = client.post(f"/v1/account/{account}/search", params={"path": "INBOX"},
                           json={"search": {"since": "yesterday"}})
    assert bad_date.status_code == 400 and bad_date.json()["field"] == "search.since"
    labels = client.put(f"/v1/account/{account}/message/AAAAAAAAAAAAAAAAAAAA",
                        json={"labels": {"add": ["Work"]}})
    assert labels.status_code == 404 and labels.json()["code"] == "MessageNotFound"


def test_labels_need_gmail_and_flags_must_be_flags(client: httpx.Client, dovecot: Dovecot,
                                                   box: dict[str, str]) -> None:
    entry = deliver(client, dovecot, box, f"labels {uuid.uuid4().hex[:8]}")
    refused = client.put(f"/v1/account/{box['account']}/message/{entry['id']}", json={"labels": {"add": ["Work"]}})
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "labels" and "X-GM-EXT-1" in refused.json()["message"]
    bad = client.put(f"/v1/account/{box['account']}/message/{entry['id']}",
                     json={"flags": {"add": ["\\Seen) (\\Deleted"]}})
    assert bad.status_code == 400, bad.text
    assert bad.json()["field"] == "flags.add"
    assert "\\Deleted" not in ok(client.get(f"/v1/account/{box['account']}/message/{entry['id']}"))["flags"]


def test_move_one_and_many(client: httpx.Client, dovecot: Dovecot, box: dict[str, str],
                           webhook_receiver: WebhookReceiver) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    entry = deliver(client, dovecot, box, f"move me {tag}")
    nowhere = client.put(f"/v1/account/{account}/message/{entry['id']}/move", json={"path": f"Nowhere{tag}"})
    assert nowhere.status_code == 404, nowhere.text
    assert nowhere.json()["field"] == "path" and nowhere.json()["code"] == "MailboxNotFound"
    moved = ok(client.put(f"/v1/account/{account}/message/{entry['id']}/move", json={"path": "Archive"}))
    assert moved["path"] == "Archive" and moved["uid"] >= 1
    archived = indexed(client, account, "Archive", f"move me {tag}")
    assert archived["id"] == moved["id"] and archived["uid"] == moved["uid"]
    hook(webhook_receiver, "messageDeleted", account, id=entry["id"])
    assert f"move me {tag}" not in [m["subject"] for m in listing(client, account, "INBOX")]

    others = [deliver(client, dovecot, box, f"many {tag} {n}") for n in range(2)]
    answer = ok(client.put(f"/v1/account/{account}/messages/move", params={"path": "INBOX"},
                           json={"search": {"subject": f"many {tag}"}, "path": "Archive"}))
    assert answer["path"] == "Archive"
    assert {old for old, _ in answer["idMap"]} == {m["id"] for m in others}
    for _, new in answer["idMap"]:
        wait_for(lambda new=new: any(m["id"] == new for m in listing(client, account, "Archive")),
                 timeout=15, message="moved message indexed in Archive")


def test_delete_to_trash_then_for_good(client: httpx.Client, dovecot: Dovecot, box: dict[str, str]) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    entry = deliver(client, dovecot, box, f"trash me {tag}")
    answer = ok(client.delete(f"/v1/account/{account}/message/{entry['id']}"))
    assert answer["deleted"] is False and answer["moved"]["destination"] == "Trash"
    trashed = indexed(client, account, "Trash", f"trash me {tag}")
    assert trashed["id"] == answer["moved"]["message"]
    # Already in Trash: deleted for good.
    assert ok(client.delete(f"/v1/account/{account}/message/{trashed['id']}")) == {"deleted": True}
    wait_for(lambda: f"trash me {tag}" not in [m["subject"] for m in listing(client, account, "Trash")],
             timeout=15, message="gone from Trash")

    forced = deliver(client, dovecot, box, f"force me {tag}")
    assert ok(client.delete(f"/v1/account/{account}/message/{forced['id']}", params={"force": "true"})) == \
        {"deleted": True}
    assert tag not in dovecot.doveadm("search", "-u", box["user"], "mailbox", "Trash", "subject", f"force me {tag}")
    wait_for(lambda: f"force me {tag}" not in [m["subject"] for m in listing(client, account, "INBOX")],
             timeout=15, message="force-deleted message gone")

    for n in range(2):
        deliver(client, dovecot, box, f"bulk trash {tag} {n}")
    bulk = ok(client.put(f"/v1/account/{account}/messages/delete", params={"path": "INBOX"},
                         json={"search": {"subject": f"bulk trash {tag}"}}))
    assert bulk["deleted"] is False and bulk["moved"]["destination"] == "Trash"
    assert len(bulk["moved"]["idMap"]) == 2


def test_upload_raw_and_structured(client: httpx.Client, box: dict[str, str],
                                   webhook_receiver: WebhookReceiver) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    raw = message(f"uploaded raw {tag}")
    answer = ok(client.post(f"/v1/account/{account}/message", json={
        "path": "Archive", "flags": ["\\Seen"], "internalDate": "2021-07-08T07:06:34.336Z",
        "raw": base64.b64encode(raw).decode()}))
    assert answer["path"] == "Archive" and answer["uid"] >= 1 and answer["uidValidity"].isdigit()
    entry = indexed(client, account, "Archive", f"uploaded raw {tag}")
    assert entry["id"] == answer["id"] and "\\Seen" in entry["flags"]
    assert entry["internalDate"].startswith("2021-07-08")
    assert answer["messageId"] == entry["messageId"]
    assert hook(webhook_receiver, "messageNew", account, id=answer["id"])["data"]["path"] == "Archive"

    built = ok(client.post(f"/v1/account/{account}/message", json={
        "path": "Archive", "to": [{"address": "recipient@example.com"}], "subject": f"structured {tag}",
        "text": "Hello from myself!", "html": "<p>Hello from myself!</p>",
        "attachments": [{"filename": "transparent.gif", "contentType": "image/gif",
                         "content": "R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs="}]}))
    entry = indexed(client, account, "Archive", f"structured {tag}")
    assert entry["id"] == built["id"]
    full = ok(client.get(f"/v1/account/{account}/message/{built['id']}"))
    assert full["from"]["address"] == f"{box['user']}@dovecot.test"  # the account's address
    assert full["text"]["plain"].strip() == "Hello from myself!"
    assert [a["filename"] for a in full["attachments"]] == ["transparent.gif"]

    mixed = client.post(f"/v1/account/{account}/message", json={
        "path": "Archive", "raw": base64.b64encode(raw).decode(), "text": "also"})
    assert mixed.status_code == 400 and mixed.json()["field"] == "text"
    unknown = client.post(f"/v1/account/{account}/message", json={"path": "Archive", "colour": "red"})
    assert unknown.status_code == 400 and "colour" in unknown.json()["message"]


def test_create_rename_delete_folder(client: httpx.Client, dovecot: Dovecot, box: dict[str, str]) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]

    def folders() -> list[str]:
        return dovecot.doveadm("mailbox", "list", "-u", box["user"]).split()

    created = ok(client.post(f"/v1/account/{account}/mailbox", json={"path": ["Projects", f"P{tag}"]}))
    assert created["path"] == f"Projects/P{tag}" and created["created"] is True
    assert f"Projects/P{tag}" in folders()
    again = ok(client.post(f"/v1/account/{account}/mailbox", json={"path": f"Projects/P{tag}"}))
    assert again["created"] is False

    renamed = ok(client.put(f"/v1/account/{account}/mailbox",
                            json={"path": f"Projects/P{tag}", "newPath": f"Projects/R{tag}"}))
    assert renamed == {"path": f"Projects/P{tag}", "newPath": f"Projects/R{tag}", "renamed": True}
    assert f"Projects/R{tag}" in folders() and f"Projects/P{tag}" not in folders()

    deleted = ok(client.delete(f"/v1/account/{account}/mailbox", params={"path": f"Projects/R{tag}"}))
    assert deleted == {"path": f"Projects/R{tag}", "deleted": True}
    assert f"Projects/R{tag}" not in folders()
    missing = client.delete(f"/v1/account/{account}/mailbox", params={"path": f"Nothing{tag}"})
    assert missing.status_code == 404 and missing.json()["code"] == "NotFound"


def test_source_text_and_mark_as_seen(client: httpx.Client, dovecot: Dovecot, box: dict[str, str]) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    raw = message(f"read source {tag}", body="Größe " * 10 + "\n")
    dovecot.deliver(box["user"], raw)
    entry = indexed(client, account, "INBOX", f"read source {tag}")

    source = client.get(f"/v1/account/{account}/message/{entry['id']}/source")
    assert source.status_code == 200 and source.headers["content-type"].startswith("message/rfc822")
    assert source.content.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")

    plain_only = ok(client.get(f"/v1/account/{account}/message/{entry['id']}",
                               params={"textType": "html", "maxBytes": 10}))
    assert "plain" not in plain_only["text"] and plain_only["text"]["hasMore"] is False
    assert plain_only["unseen"] is True

    text_id = ok(client.get(f"/v1/account/{account}/message/{entry['id']}"))["text"]["id"]
    text = ok(client.get(f"/v1/account/{account}/text/{text_id}", params={"maxBytes": 8}))
    assert text == {"plain": "Größe ", "hasMore": True}  # cut at 8 bytes of UTF-8
    whole = ok(client.get(f"/v1/account/{account}/text/{text_id}"))
    assert whole == {"plain": "Größe " * 10 + "\n", "hasMore": False}
    assert client.get(f"/v1/account/{account}/text/nonsense").status_code == 404

    seen = ok(client.get(f"/v1/account/{account}/message/{entry['id']}", params={"markAsSeen": "true"}))
    assert seen["unseen"] is False and "\\Seen" in seen["flags"]
    wait_for(lambda: "\\Seen" in indexed(client, account, "INBOX", f"read source {tag}")["flags"],
             timeout=10, message="\\Seen indexed after markAsSeen")


def test_submit_a_stored_draft(client: httpx.Client, box: dict[str, str], smtp_sink: SmtpSink) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    recipient = f"draft-{tag}@example.org"
    draft = ok(client.post(f"/v1/account/{account}/message", json={
        "path": "Drafts", "flags": ["\\Draft"], "to": [{"address": recipient}],
        "subject": f"draft {tag}", "text": "Sent from a draft"}))
    indexed(client, account, "Drafts", f"draft {tag}")
    queued = ok(client.post(f"/v1/account/{account}/message/{draft['id']}/submit", json={}))
    assert queued["response"] == "Queued for delivery" and queued["queueId"]
    assert queued["messageId"] == draft["messageId"]
    received = wait_for(lambda: smtp_sink.to(recipient), timeout=15, message="draft delivered")
    assert received[-1].message["Subject"] == f"draft {tag}"
    # Delivered: filed in Sent, and gone from Drafts.
    assert indexed(client, account, "Sent", f"draft {tag}")["messageId"] == draft["messageId"]
    wait_for(lambda: f"draft {tag}" not in [m["subject"] for m in listing(client, account, "Drafts")],
             timeout=15, message="the sent draft removed from Drafts")

    # copy: false files no Sent copy, and the sent draft still leaves Drafts.
    quiet = ok(client.post(f"/v1/account/{account}/message", json={
        "path": "Drafts", "flags": ["\\Draft"], "to": [{"address": recipient}],
        "subject": f"uncopied draft {tag}", "text": "no copy"}))
    indexed(client, account, "Drafts", f"uncopied draft {tag}")
    ok(client.post(f"/v1/account/{account}/message/{quiet['id']}/submit", json={"copy": False}))
    wait_for(lambda: len(smtp_sink.to(recipient)) == 2, timeout=15, message="second draft delivered")
    wait_for(lambda: f"uncopied draft {tag}" not in [m["subject"] for m in listing(client, account, "Drafts")],
             timeout=15, message="the uncopied draft removed from Drafts")
    assert f"uncopied draft {tag}" not in [m["subject"] for m in listing(client, account, "Sent")]

    plain = ok(client.post(f"/v1/account/{account}/message", json={
        "path": "Archive", "to": [{"address": recipient}], "subject": f"not a draft {tag}", "text": "x"}))
    indexed(client, account, "Archive", f"not a draft {tag}")
    refused = client.post(f"/v1/account/{account}/message/{plain['id']}/submit", json={})
    assert refused.status_code == 400 and refused.json()["code"] == "MessageNotDraft"


def test_sent_copy_goes_to_sent_mail_path(client: httpx.Client, box: dict[str, str], smtp_sink: SmtpSink) -> None:
    account, tag = box["account"], uuid.uuid4().hex[:8]
    queued = ok(client.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": f"copy-{tag}@example.org"}], "subject": f"filed elsewhere {tag}", "text": "x",
        "copy": True, "sentMailPath": "Archive"}))
    wait_for(lambda: smtp_sink.to(f"copy-{tag}@example.org"), timeout=15, message="delivered")
    copy = indexed(client, account, "Archive", f"filed elsewhere {tag}")
    assert copy["messageId"] == queued["messageId"] and "\\Seen" in copy["flags"]
    assert f"filed elsewhere {tag}" not in [m["subject"] for m in listing(client, account, "Sent")]
