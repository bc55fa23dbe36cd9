"""EmailEngine's documented example requests for the mailbox and message routes, sent
unchanged (the bodies are the examples of EmailEngine 2.x's API reference), and the
documented response fields checked.  Real Dovecot behind imap-sync.

Where an example asks for what only Gmail has (emailId, threadId, gmailRaw,
labels), mailgate refuses it with 400 naming the field instead of ignoring it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.test_imap_sync import wait_connected
from tests.e2e.test_mailbox_ops import indexed, listing, message
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for

# MessageUpdate's example.
UPDATE_EXAMPLE = {"flags": {"add": "\\Seen", "delete": "\\Flagged"}}
# MessageSearchPayload's example.
SEARCH_EXAMPLE = {
    "search": {
        "unseen": True, "flagged": True, "from": "nyan.cat@example.com", "body": "Hello world",
        "subject": "Hello world", "sentBefore": "2024-08-09", "sentSince": "2022-08-09",
        "emailId": "1278455344230334865", "threadId": "1266894439832287888",
        "header": {"Message-ID": "<12345@example.com>"}, "gmailRaw": "has:attachment in:unread",
        "labels": {"has": ["Important"], "not": ["Horizon"]},
    }
}
GMAIL_ONLY = ("emailId", "threadId", "gmailRaw", "labels")
# MessageUpload's field examples.
UPLOAD_EXAMPLE = {"path": "INBOX", "flags": ["\\Seen", "\\Draft"],
                  "raw": "TUlNRS1WZXJzaW9uOiAxLjANClN1YmplY3Q6IGhlbGxvIHdvcmxkDQoNCkhlbGxvIQ0K"}


@pytest.fixture(scope="module")
def ee(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Iterator[tuple[httpx.Client, str, str]]:
    """An EmailEngine-style client (``?access_token=``-free bearer) and a fresh account."""
    user = dovecot.new_user()
    account = f"ee-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=stack.api_url, timeout=20, headers=stack.auth_headers) as api:
        response = api.post("/v1/account", json={
            "account": account, "name": "EE Client", "email": f"{user}@dovecot.test",
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False,
                     "tls": {"rejectUnauthorized": False}, "auth": {"user": user, "pass": dovecot.password}},
            "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                     "auth": {"user": user, "pass": "smtp-password"}},
        })
        assert response.status_code == 200, response.text
        wait_connected(api, account)
        yield api, account, user


def test_folder_examples(ee: tuple[httpx.Client, str, str]) -> None:
    api, account, _ = ee
    # Modify mailbox: path "Folder Name" renamed to ["Parent folder", "Subfolder"].
    assert api.post(f"/v1/account/{account}/mailbox", json={"path": "Folder Name"}).status_code == 200
    renamed = api.put(f"/v1/account/{account}/mailbox",
                      json={"path": "Folder Name", "newPath": ["Parent folder", "Subfolder"]})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {"path": "Folder Name", "newPath": "Parent folder/Subfolder", "renamed": True}
    # Create mailbox with the example path: it exists now, so created is false.
    created = api.post(f"/v1/account/{account}/mailbox", json={"path": ["Parent folder", "Subfolder"]})
    assert created.status_code == 200, created.text
    assert created.json() == {"path": "Parent folder/Subfolder", "created": False}
    fresh = api.post(f"/v1/account/{account}/mailbox", json={"path": "My Outdated Mail"}).json()
    assert fresh == {"path": "My Outdated Mail", "created": True}
    # Delete mailbox: ?path=My Outdated Mail.
    deleted = api.delete(f"/v1/account/{account}/mailbox", params={"path": "My Outdated Mail"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"path": "My Outdated Mail", "deleted": True}


def test_message_examples(ee: tuple[httpx.Client, str, str]) -> None:
    api, account, _ = ee
    uploaded = api.post(f"/v1/account/{account}/message", json=UPLOAD_EXAMPLE)
    assert uploaded.status_code == 200, uploaded.text
    upload = uploaded.json()
    assert upload["path"] == "INBOX" and isinstance(upload["uid"], int)
    assert isinstance(upload["uidValidity"], str) and isinstance(upload["id"], str)
    entry = indexed(api, account, "INBOX", "hello world")
    assert entry["id"] == upload["id"] and set(entry["flags"]) >= {"\\Seen", "\\Draft"}

    updated = api.put(f"/v1/account/{account}/message/{upload['id']}", json=UPDATE_EXAMPLE)
    assert updated.status_code == 200, updated.text
    assert updated.json() == {"flags": {"add": True, "delete": True}}

    source = api.get(f"/v1/account/{account}/message/{upload['id']}/source")
    assert source.status_code == 200 and b"Subject: hello world" in source.content
    text_id = api.get(f"/v1/account/{account}/message/{upload['id']}", params={"textType": "*"}).json()["text"]["id"]
    text = api.get(f"/v1/account/{account}/text/{text_id}", params={"textType": "*"})
    assert text.status_code == 200, text.text
    assert text.json()["plain"].replace("\r\n", "\n") == "Hello!\n" and text.json()["hasMore"] is False

    # Move: {"path": "Target/Folder"}.
    assert api.post(f"/v1/account/{account}/mailbox", json={"path": "Target/Folder"}).status_code == 200
    moved = api.put(f"/v1/account/{account}/message/{upload['id']}/move", json={"path": "Target/Folder"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["path"] == "Target/Folder" and isinstance(moved.json()["uid"], int)
    assert isinstance(moved.json()["id"], str)

    # Bulk move back with the search examples: seq "1:10" of the folder, to "INBOX".
    back = api.put(f"/v1/account/{account}/messages/move", params={"path": "Target/Folder"},
                   json={"search": {"seq": "1:10"}, "path": "INBOX"})
    assert back.status_code == 200, back.text
    assert back.json()["path"] == "INBOX" and back.json()["idMap"][0][0] == moved.json()["id"]
    back_id = back.json()["idMap"][0][1]

    bulk = api.put(f"/v1/account/{account}/messages", params={"path": "INBOX"},
                   json={"search": {"unseen": True}, "update": {"flags": {"add": ["\\Seen"]}}})
    assert bulk.status_code == 200 and bulk.json() == {"flags": {"add": True}}

    wait_for(lambda: any(m["id"] == back_id for m in listing(api, account, "INBOX")), timeout=15,
             message="moved back and indexed")
    # Delete message: to Trash first, answered with where it went.
    trashed = api.delete(f"/v1/account/{account}/message/{back_id}")
    assert trashed.status_code == 200, trashed.text
    assert trashed.json()["deleted"] is False and trashed.json()["moved"]["destination"] == "Trash"
    assert isinstance(trashed.json()["moved"]["message"], str)
    # Bulk delete with the uid example "100:200" (nothing there) and force.
    none = api.put(f"/v1/account/{account}/messages/delete", params={"path": "INBOX", "force": "true"},
                   json={"search": {"uid": "100:200"}})
    assert none.status_code == 200 and none.json() == {"deleted": True}


def test_search_example(ee: tuple[httpx.Client, str, str], dovecot: Dovecot) -> None:
    api, account, user = ee
    # The whole example: its Gmail-only keys are refused by name, not dropped.
    refused = api.post(f"/v1/account/{account}/search", params={"path": "INBOX"}, json=SEARCH_EXAMPLE)
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] in {f"search.{key}" for key in GMAIL_ONLY}
    assert refused.json()["statusCode"] == 400 and refused.json()["code"]

    tag = uuid.uuid4().hex[:8]
    dovecot.deliver(user, message(f"Hello world {tag}", sender="nyan.cat@example.com", body="Hello world\n",
                                  date="Mon, 05 Jun 2023 10:00:00 +0000",
                                  headers={"X-Tag": "x"}))
    entry = indexed(api, account, "INBOX", f"Hello world {tag}")
    api.put(f"/v1/account/{account}/message/{entry['id']}", json={"flags": {"add": ["\\Flagged"]}})
    imap_only = {"search": {k: v for k, v in SEARCH_EXAMPLE["search"].items()
                            if k not in GMAIL_ONLY and k != "header"}}
    found = api.post(f"/v1/account/{account}/search", params={"path": "INBOX"}, json=imap_only)
    assert found.status_code == 200, found.text
    page: dict[str, Any] = found.json()
    assert set(page) >= {"total", "page", "pages", "messages"}
    assert [m["id"] for m in page["messages"]] == [entry["id"]]


def test_draft_submit_example(ee: tuple[httpx.Client, str, str], smtp_sink: SmtpSink) -> None:
    api, account, _ = ee
    recipient = f"ee-draft-{uuid.uuid4().hex[:8]}@example.com"
    draft = api.post(f"/v1/account/{account}/message", json={
        "path": "Drafts", "flags": ["\\Draft"], "to": [{"address": recipient}],
        "subject": "What a wonderful message", "text": "Hello from myself!"}).json()
    indexed(api, account, "Drafts", "What a wonderful message")
    # The documented minimal call: an empty JSON object.
    queued = api.post(f"/v1/account/{account}/message/{draft['id']}/submit", content=b"{}",
                      headers={"Content-Type": "application/json"})
    assert queued.status_code == 200, queued.text
    assert set(queued.json()) >= {"response", "messageId", "queueId"}


def test_unknown_account_and_message_codes(ee: tuple[httpx.Client, str, str]) -> None:
    api, account, _ = ee
    missing = api.put(f"/v1/account/nobody-{uuid.uuid4().hex[:6]}/message/AAAAAQAACnA", json=UPDATE_EXAMPLE)
    assert missing.status_code == 404 and missing.json()["code"] == "AccountNotFound"
    gone = api.delete(f"/v1/account/{account}/message/AAAAAQAACnA")
    assert gone.status_code == 404 and gone.json()["code"] == "MessageNotFound"
