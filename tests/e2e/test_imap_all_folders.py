"""Every folder is watched by default (EmailEngine's default), on the account's one connection.

The stack polls folders other than INBOX every 2 s (MAILGATE_IMAP_FOLDER_POLL).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.test_imap_sync import hook, mail, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def watched(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Iterator[tuple[httpx.Client, str, str]]:
    """One account without ``path`` for the module: (api client, account, Dovecot user)."""
    user = dovecot.new_user()
    account = f"all-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as api:
        response = api.post("/v1/account", json={
            "account": account, "email": f"{user}@dovecot.test",
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "tls": {"rejectUnauthorized": False},
                     "auth": {"user": user, "pass": dovecot.password}},
            "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False},
        })
        assert response.status_code == 200, response.text
        wait_connected(api, account)
        yield api, account, user


def subjects(api: httpx.Client, account: str, path: str) -> list[str]:
    response = api.get(f"/v1/account/{account}/messages", params={"path": path})
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["messages"]]


def test_mail_in_junk_is_announced_with_the_folder_at_the_top(
    watched: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = watched
    raw, message_id = mail("filtered as spam", f"{user}@dovecot.test")
    dovecot.deliver(user, raw, mailbox="Junk")
    body = hook(webhook_receiver, "messageNew", account, messageId=message_id)
    assert (body["path"], body["specialUse"]) == ("Junk", "\\Junk")
    assert body["data"]["path"] == "Junk"
    assert body["data"]["messageSpecialUse"] == "\\Junk"
    assert "filtered as spam" in subjects(api, account, "Junk")


def test_a_new_folder_is_announced_indexed_and_its_removal_too(
    watched: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = watched
    folder = f"Projects-{uuid.uuid4().hex[:6]}"
    dovecot.doveadm("mailbox", "create", "-u", user, folder)
    created = hook(webhook_receiver, "mailboxNew", account, path=folder)
    assert created["path"] == folder
    assert created["data"]["name"] == folder
    assert created["data"]["specialUse"] is False
    assert created["data"]["uidValidity"].isdigit()

    raw, message_id = mail("in the new folder", f"{user}@dovecot.test")
    dovecot.deliver(user, raw, mailbox=folder)
    assert hook(webhook_receiver, "messageNew", account, messageId=message_id)["path"] == folder
    assert subjects(api, account, folder) == ["in the new folder"]

    dovecot.doveadm("mailbox", "delete", "-u", user, "-r", folder)
    gone = hook(webhook_receiver, "mailboxDeleted", account, path=folder)
    assert gone["data"] == {"path": folder, "name": folder, "specialUse": False}
    wait_for(lambda: folder not in [m["path"] for m in api.get(f"/v1/account/{account}/mailboxes").json()
                                    ["mailboxes"]], timeout=5, message="folder gone from the listing")
    # Its messages left the index with it (no messageDeleted per message, as EmailEngine).
    assert not webhook_receiver.received("messageDeleted", id=hook(
        webhook_receiver, "messageNew", account, messageId=message_id)["data"]["id"])


def test_one_connection_for_all_folders(watched: tuple[httpx.Client, str, str], dovecot: Dovecot) -> None:
    _, _, user = watched
    assert dovecot.connections().get(user) == 1


def test_notify_pushes_news_of_other_folders_during_idle(dovecot: Dovecot) -> None:
    """Where the server has NOTIFY (Dovecot does), IDLE on INBOX ends as soon as
    another folder gets mail or a folder appears: no waiting for the poll round."""
    import asyncio
    import time

    from mailgate_imap_sync import notify
    from mailgate_imap_sync.client import connect
    from mailgate_imap_sync.parse import Change

    user = dovecot.new_user()

    async def pushes() -> list[tuple[int, float]]:
        connection = await connect({"host": "127.0.0.1", "port": dovecot.port, "secure": False,
                                    "tls": {"rejectUnauthorized": False},
                                    "auth": {"user": user, "pass": dovecot.password}}, 10, 1 << 20)
        try:
            assert "NOTIFY" in connection.capabilities
            await connection.select("INBOX")
            assert await notify.enable(connection)
            seen = []
            for change in (lambda: dovecot.deliver(user, mail("x", f"{user}@dovecot.test")[0], mailbox="Junk"),
                           lambda: dovecot.doveadm("mailbox", "create", "-u", user, "Fresh")):
                change()
                started = time.monotonic()
                seen.append((await connection.idle(10, 0.1), time.monotonic() - started))
            return seen
        finally:
            await connection.close()

    for kinds, seconds in asyncio.run(pushes()):
        assert kinds & Change.FOLDERS
        assert seconds < 5
