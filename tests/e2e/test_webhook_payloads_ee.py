"""EmailEngine-shaped mailbox webhooks from real Dovecot, the notify settings, the
notify queue's pause, and reconnect / sync / flush sent over the bus.

One account (one Dovecot user) serves the whole module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.db.models import Mailbox
from tests.e2e.test_imap_sync import hook, mail, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def mailbox(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Iterator[tuple[httpx.Client, str, str]]:
    """(api client, account, Dovecot user), INBOX only to keep the module quick."""
    user = dovecot.new_user()
    account = f"eehook-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=stack.api_url, timeout=15, headers=stack.auth_headers) as api:
        response = api.post("/v1/account", json={
            "account": account, "email": f"{user}@dovecot.test", "path": ["INBOX"],
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "secure": False, "tls": {"rejectUnauthorized": False},
                     "auth": {"user": user, "pass": dovecot.password}},
            "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False},
        })
        assert response.status_code == 200, response.text
        wait_connected(api, account)
        yield api, account, user


def rich_mail(to: str, subject: str) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = "Ann Sender <ann@example.org>"
    msg["Sender"] = "Bulk Robot <robot@example.org>"
    msg["Reply-To"] = "Replies <replies@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["X-Campaign"] = "spring-sale"
    msg["Message-ID"] = message_id = make_msgid(domain="example.org")
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0000"
    msg.set_content("Hello Bob, this is the plain text of the message.\n")
    msg.add_alternative("<p>Hello Bob, this is the <b>html</b>.</p>\n", subtype="html")
    msg.add_attachment(b"%PDF-1.4 test", maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes(), message_id


def set_settings(api: httpx.Client, values: dict[str, Any]) -> None:
    response = api.post("/v1/settings", json=values)
    assert response.status_code == 200, response.text


def test_message_new_updated_deleted_match_emailengine(
    mailbox: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = mailbox
    raw, message_id = rich_mail(f"Bob <{user}@dovecot.test>", "quarterly invoice")
    dovecot.deliver(user, raw)
    new = hook(webhook_receiver, "messageNew", account, messageId=message_id)
    assert (new["path"], new["specialUse"], new["serviceUrl"]) == ("INBOX", "\\Inbox", None)
    data = new["data"]
    assert data["subject"] == "quarterly invoice"
    assert data["sender"] == {"name": "Bulk Robot", "address": "robot@example.org"}
    assert data["replyTo"] == [{"name": "Replies", "address": "replies@example.org"}]
    assert (data["unseen"], data["flagged"], data["answered"], data["draft"]) == (True, False, False, False)
    assert (data["seemsLikeNew"], data["messageSpecialUse"]) == (True, "\\Inbox")
    assert "headers" not in data  # notifyHeaders is empty by default
    assert set(data["text"]) == {"id", "encodedSize"}  # notifyText is off by default
    assert set(data["text"]["encodedSize"]) == {"plain", "html"}
    [attachment] = data["attachments"]
    assert (attachment["filename"], attachment["contentType"]) == ("invoice.pdf", "application/pdf")

    # The ids in the webhook are the ones the API serves.
    served = api.get(f"/v1/account/{account}/message/{data['id']}")
    assert served.status_code == 200, served.text
    assert served.json()["text"]["id"] == data["text"]["id"]
    assert [a["id"] for a in served.json()["attachments"]] == [attachment["id"]]

    hooked = wait_for(lambda: [h for h in webhook_receiver.received("messageNew", messageId=message_id)],
                      timeout=5)[0]
    assert hooked.headers["x-ee-wh-event-id"] == new["eventId"]
    assert hooked.headers["x-ee-wh-attempts-made"] == "0"
    assert hooked.headers["x-ee-wh-id"].isdigit()
    assert hooked.headers["x-ee-wh-queued-time"].endswith("s")

    uid = str(data["uid"])
    dovecot.doveadm("flags", "add", "-u", user, "\\Seen \\Flagged", "mailbox", "INBOX", "uid", uid)
    added = hook(webhook_receiver, "messageUpdated", account, id=data["id"])
    assert added["path"] == "INBOX"
    assert added["data"] == {"id": data["id"], "uid": data["uid"],
                             "changes": {"flags": {"added": ["\\Flagged", "\\Seen"],
                                                   "value": ["\\Flagged", "\\Seen"]}}}
    dovecot.doveadm("flags", "remove", "-u", user, "\\Seen", "mailbox", "INBOX", "uid", uid)
    removed = wait_for(lambda: [h.json for h in webhook_receiver.received("messageUpdated", id=data["id"])
                                if "deleted" in h.json["data"]["changes"]["flags"]], timeout=10)[0]
    assert removed["data"]["changes"] == {"flags": {"deleted": ["\\Seen"], "value": ["\\Flagged"]}}

    dovecot.doveadm("expunge", "-u", user, "mailbox", "INBOX", "uid", uid)
    deleted = hook(webhook_receiver, "messageDeleted", account, id=data["id"])
    assert (deleted["path"], deleted["data"]) == ("INBOX", {"id": data["id"], "uid": data["uid"]})


def test_notify_text_and_headers_settings(
    mailbox: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = mailbox
    set_settings(api, {"notifyText": True, "notifyTextSize": 20, "notifyHeaders": ["X-Campaign", "Reply-To"]})
    try:
        # The imap-sync replica reads the notify settings at most every 5 seconds.
        time.sleep(1)
        deadline = time.monotonic() + 6
        while True:
            raw, message_id = rich_mail(f"{user}@dovecot.test", "with text")
            dovecot.deliver(user, raw)
            data = hook(webhook_receiver, "messageNew", account, messageId=message_id)["data"]
            if "plain" in data["text"] or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        set_settings(api, {"notifyText": False, "notifyTextSize": 0, "notifyHeaders": []})
    assert data["text"]["plain"] == "Hello Bob, this is t"
    assert data["text"]["html"] == "<p>Hello Bob, this i"
    assert data["text"]["hasMore"] is True
    assert data["headers"] == {"reply-to": ["Replies <replies@example.org>"], "x-campaign": ["spring-sale"]}


def test_paused_notify_queue_holds_webhooks_until_resumed(
    mailbox: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = mailbox
    paused = api.put("/v1/settings/queue/notify", json={"paused": True})
    assert paused.status_code == 200, paused.text
    try:
        time.sleep(1.2)  # the webhooks service reads the queue state every second here
        raw, message_id = mail("while paused", f"{user}@dovecot.test")
        dovecot.deliver(user, raw)
        # Indexed (so its event is out), yet not delivered.
        wait_for(lambda: "while paused" in [m["subject"] for m in api.get(
            f"/v1/account/{account}/messages").json()["messages"]], timeout=10, message="indexed")
        time.sleep(1)
        assert not webhook_receiver.received("messageNew", messageId=message_id)
    finally:
        assert api.put("/v1/settings/queue/notify", json={"paused": False}).status_code == 200
    hook(webhook_receiver, "messageNew", account, messageId=message_id)


def publish(stack: Stack, account: str, command: str) -> None:
    async def send() -> None:
        bus = Bus(stack.amqp_url)
        await bus.connect()
        try:
            await bus.publish(events.AccountCommand(account=account, command=command))  # type: ignore[arg-type]
        finally:
            await bus.close()

    asyncio.run(send())


def inbox_synced_at(stack: Stack, account: str) -> datetime | None:
    async def read() -> datetime | None:
        db = Database(stack.database_url, pool_size=1)
        try:
            async with db.sessions() as session:
                return await session.scalar(select(Mailbox.synced_at).where(
                    Mailbox.account_id == account, Mailbox.path == "INBOX"))
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_reconnect_sync_and_flush_commands(
    stack: Stack, mailbox: tuple[httpx.Client, str, str], dovecot: Dovecot, webhook_receiver: WebhookReceiver
) -> None:
    api, account, user = mailbox
    raw, message_id = mail("kept across a flush", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    hook(webhook_receiver, "messageNew", account, messageId=message_id)

    before = inbox_synced_at(stack, account)
    publish(stack, account, "sync")
    wait_for(lambda: inbox_synced_at(stack, account) != before, timeout=5, message="INBOX synced again")

    logins = dovecot.logins(user)
    publish(stack, account, "reconnect")
    wait_for(lambda: dovecot.logins(user) > logins, timeout=10, message="logged in again")
    wait_connected(api, account)

    logins = dovecot.logins(user)
    publish(stack, account, "flush")
    wait_for(lambda: dovecot.logins(user) > logins, timeout=10, message="logged in after the flush")
    wait_for(lambda: "kept across a flush" in [m["subject"] for m in api.get(
        f"/v1/account/{account}/messages").json()["messages"]], timeout=10, message="index rebuilt")
    # Rebuilt silently: existing mail is not announced again.
    assert len(webhook_receiver.received("messageNew", messageId=message_id)) == 1


def test_imap_connection_binds_to_the_local_address(dovecot: Dovecot) -> None:
    from mailgate_common.local_addresses import LocalAddresses
    from mailgate_imap_sync import accounts

    user = dovecot.new_user()
    accounts.use_local_addresses(LocalAddresses.from_spec("127.0.0.2|imap-a.test,127.0.0.3|imap-b.test"))
    imap = accounts.ImapAccount("local-addr", {"host": "127.0.0.1", "port": dovecot.port, "secure": False,
                                              "tls": {"rejectUnauthorized": False},
                                              "auth": {"user": user, "pass": dovecot.password}}, False, "")

    async def connect_twice() -> None:
        for _ in range(2):
            connection = await imap.connect(10, 1 << 20)
            await connection.close()

    try:
        asyncio.run(connect_twice())
    finally:
        accounts.use_local_addresses(LocalAddresses(()))
    logins = [line for line in dovecot.log_tail(100_000).splitlines() if f"Login: user=<{user}>" in line]
    assert "rip=127.0.0.2" in logins[0]
    assert "rip=127.0.0.3" in logins[1]


def test_command_left_by_another_replica_is_carried_out_by_the_holder(
    stack: Stack, mailbox: tuple[httpx.Client, str, str], dovecot: Dovecot
) -> None:
    """A replica that gets the command but does not watch the account leaves it on the
    account; the watching replica's heartbeat (every second here) carries it out."""
    from sqlalchemy import text

    from mailgate_imap_sync import control

    api, account, user = mailbox

    async def leave(db: Database) -> None:
        await control.mark(db, account, "reconnect", "from-another-replica")

    async def pending(db: Database) -> Any:
        async with db.sessions() as session:
            return await session.scalar(text("SELECT extra -> 'imapCommands' FROM accounts WHERE id = :a"),
                                        {"a": account})

    def with_db(work: Any) -> Any:
        async def run() -> Any:
            db = Database(stack.database_url, pool_size=1)
            try:
                return await work(db)
            finally:
                await db.dispose()

        return asyncio.run(run())

    logins = dovecot.logins(user)
    with_db(leave)
    wait_for(lambda: dovecot.logins(user) > logins, timeout=10, message="reconnected by the holder")
    assert with_db(pending) is None
    wait_connected(api, account)
