"""Watching the folders an account asks for (EmailEngine's ``path``; every folder when unset,
see test_imap_all_folders.py).

The stack polls those folders every 2 s (MAILGATE_IMAP_FOLDER_POLL), so news
there arrives within a few seconds while INBOX stays on IDLE.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.e2e.test_imap_sync import hook, mail, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for
from tests.support.webhook_receiver import WebhookReceiver


def add_account(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, user: str,
                path: Any = None) -> str:
    account_id = f"fold-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "account": account_id,
        "email": f"{user}@dovecot.test",
        "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False,
                 "tls": {"rejectUnauthorized": False},
                 "auth": {"user": user, "pass": dovecot.password}},
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False},
    }
    if path is not None:
        body["path"] = path
    response = api.post("/v1/account", json=body)
    assert response.status_code == 200, response.text
    return account_id


def announced(receiver: WebhookReceiver, account: str, **data: Any) -> list[dict[str, Any]]:
    return [h.json for h in receiver.received("messageNew", **data) if h.json["account"] == account]


def listing(api: httpx.Client, account: str, path: str) -> list[str]:
    response = api.get(f"/v1/account/{account}/messages", params={"path": path})
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["messages"]]


def test_listed_folder_reports_new_changed_and_deleted_mail(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    dovecot.deliver(user, mail("archived before", f"{user}@dovecot.test")[0], mailbox="Archive")
    account = add_account(api, dovecot, smtp_sink, user, path=["INBOX", "Archive"])
    assert api.get(f"/v1/account/{account}").json()["path"] == ["INBOX", "Archive"]
    wait_connected(api, account)

    raw, message_id = mail("filed into Archive", f"{user}@dovecot.test")
    started = time.monotonic()
    dovecot.deliver(user, raw, mailbox="Archive")
    new_hook = hook(webhook_receiver, "messageNew", account, messageId=message_id)
    new = new_hook["data"]
    assert time.monotonic() - started < 6
    assert (new_hook["path"], new_hook["specialUse"]) == ("Archive", "\\Archive")
    assert new["path"] == "Archive"
    assert new["messageSpecialUse"] == "\\Archive"
    assert new["subject"] == "filed into Archive"
    # Mail that was there before is indexed silently, as in INBOX.
    assert not announced(webhook_receiver, account, subject="archived before")
    assert listing(api, account, "Archive") == ["filed into Archive", "archived before"]

    dovecot.doveadm("flags", "add", "-u", user, "\\Flagged", "mailbox", "Archive", "uid", str(new["uid"]))
    updated = hook(webhook_receiver, "messageUpdated", account, id=new["id"])
    assert updated["path"] == "Archive"
    assert updated["data"]["changes"] == {"flags": {"added": ["\\Flagged"], "value": ["\\Flagged"]}}

    dovecot.doveadm("expunge", "-u", user, "mailbox", "Archive", "uid", str(new["uid"]))
    deleted = hook(webhook_receiver, "messageDeleted", account, id=new["id"])
    assert deleted["path"] == "Archive"
    assert listing(api, account, "Archive") == ["archived before"]


def test_account_with_path_inbox_watches_only_inbox(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_account(api, dovecot, smtp_sink, user, path=["INBOX"])
    wait_connected(api, account)

    dovecot.deliver(user, mail("quietly archived", f"{user}@dovecot.test")[0], mailbox="Archive")
    # Longer than a folder poll round: a watched folder would have been announced by now.
    time.sleep(3)
    raw, message_id = mail("to the inbox", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    assert hook(webhook_receiver, "messageNew", account, messageId=message_id)["data"]["path"] == "INBOX"
    assert not announced(webhook_receiver, account, subject="quietly archived")
    assert listing(api, account, "Archive") == []


def test_star_and_special_use_references_pick_folders(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    every_user, sent_user = dovecot.new_user(), dovecot.new_user()
    every = add_account(api, dovecot, smtp_sink, every_user, path="*")
    sent_only = add_account(api, dovecot, smtp_sink, sent_user, path="\\Sent")
    # A single path is stored as a one-item list, as EmailEngine does.
    assert api.get(f"/v1/account/{sent_only}").json()["path"] == ["\\Sent"]
    wait_connected(api, every)
    wait_connected(api, sent_only)

    raw_junk, junk_id = mail("spam or ham", f"{every_user}@dovecot.test")
    dovecot.deliver(every_user, raw_junk, mailbox="Junk")
    raw_sent, sent_id = mail("my own copy", f"{sent_user}@dovecot.test")
    dovecot.deliver(sent_user, raw_sent, mailbox="Sent")
    assert hook(webhook_receiver, "messageNew", every, messageId=junk_id)["data"]["path"] == "Junk"
    assert hook(webhook_receiver, "messageNew", sent_only, messageId=sent_id)["data"]["path"] == "Sent"

    # Narrowing the path to INBOX drops the Sent index rather than serving it stale
    # (and re-watching it later must not announce old mail).
    assert listing(api, sent_only, "Sent") == ["my own copy"]
    assert api.put(f"/v1/account/{sent_only}", json={"path": ["INBOX"]}).status_code == 200
    assert api.get(f"/v1/account/{sent_only}").json()["path"] == ["INBOX"]
    wait_for(lambda: listing(api, sent_only, "Sent") == [], timeout=10, message="Sent forgotten")


def test_path_needs_imap_settings(api: httpx.Client, account: str) -> None:
    response = api.put(f"/v1/account/{account}", json={"path": ["Archive"]})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "path"
