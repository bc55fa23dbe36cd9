"""IMAP sync against a real Dovecot: account state, new/updated/deleted mail
webhooks, Sent copies, and the index served over REST."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from mailgate_common import events
from mailgate_common.bus import Bus
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import IMAP_SYNC_ENV, Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver


def add_imap_account(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, user: str,
                     password: str | None = None, secure: bool = False) -> str:
    account_id = f"imap-{uuid.uuid4().hex[:10]}"
    body: dict[str, Any] = {
        "account": account_id,
        "name": "IMAP Tester",
        "email": f"{user}@dovecot.test",
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port if secure else dovecot.port,
                 "secure": secure, "tls": {"rejectUnauthorized": False},
                 "auth": {"user": user, "pass": password or dovecot.password}},
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": user, "pass": "smtp-password"}},
    }
    response = api.post("/v1/account", json=body)
    assert response.status_code == 200, response.text
    return account_id


def state_of(api: httpx.Client, account: str) -> str:
    response = api.get(f"/v1/account/{account}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def wait_connected(api: httpx.Client, account: str) -> None:
    wait_for(lambda: state_of(api, account) == "connected", timeout=20,
             message=f"{account} connected (is {state_of(api, account)})")


def mail(subject: str, to: str) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = "Ann Sender <ann@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id = make_msgid(domain="example.org")
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0000"
    msg.set_content("Hello from the test.\n")
    return msg.as_bytes(), message_id


def hook(receiver: WebhookReceiver, event: str, account: str, timeout: float = 10,
         **data: Any) -> dict[str, Any]:
    found = wait_for(lambda: [h for h in receiver.received(event, **data)
                              if h.json["account"] == account],
                     timeout=timeout, message=f"{event} webhook for {account} {data}")
    result: dict[str, Any] = found[0].json
    return result


def test_new_flagged_and_expunged_mail_produce_webhooks(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    dovecot.deliver(user, mail("already there", f"{user}@dovecot.test")[0])
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)

    raw, message_id = mail("Grüße, new mail", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    # Within 5 s: pushed by IDLE, not found by a later poll.
    new = hook(webhook_receiver, "messageNew", account, timeout=5, messageId=message_id)
    data = new["data"]
    assert data["path"] == "INBOX"
    assert data["subject"] == "Grüße, new mail"
    assert data["from"] == {"name": "Ann Sender", "address": "ann@example.org"}
    assert data["to"] == [{"address": f"{user}@dovecot.test"}]
    assert data["unseen"] is True and data["id"]
    # Mail that was there before the account was added is indexed, not "new".
    assert not [h for h in webhook_receiver.received("messageNew", subject="already there")
                if h.json["account"] == account]

    dovecot.doveadm("flags", "add", "-u", user, "\\Seen", "mailbox", "INBOX", "uid", str(data["uid"]))
    updated = hook(webhook_receiver, "messageUpdated", account, id=data["id"])
    assert updated["data"]["changes"] == {"flags": {"added": ["\\Seen"], "value": ["\\Seen"]}}

    dovecot.doveadm("expunge", "-u", user, "mailbox", "INBOX", "uid", str(data["uid"]))
    deleted = hook(webhook_receiver, "messageDeleted", account, id=data["id"])
    assert (deleted["path"], deleted["data"]) == ("INBOX", {"id": data["id"], "uid": data["uid"]})


def test_connection_dropped_by_the_server_is_reopened_and_mail_still_reported(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)

    dovecot.kick(user)
    wait_for(lambda: (api.get(f"/v1/account/{account}").json().get("lastError") or {}).get("state")
             == "disconnected", timeout=15, message="the dropped connection noticed")
    wait_connected(api, account)
    raw, message_id = mail("after the drop", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    hook(webhook_receiver, "messageNew", account, messageId=message_id)


def test_implicit_tls_account_connects_and_deleting_it_disconnects(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user, secure=True)
    wait_connected(api, account)
    assert dovecot.connections().get(user) == 1

    # Deleting the account closes its IMAP connection without a restart.
    assert api.delete(f"/v1/account/{account}").status_code == 200
    wait_for(lambda: user not in dovecot.connections(), timeout=10, message="connection closed")


def test_sent_message_is_copied_to_sent_folder(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    subject = f"copy me {uuid.uuid4().hex[:6]}"
    response = api.post(f"/v1/account/{account}/submit", json={
        "from": {"address": f"{user}@dovecot.test"},
        "to": [{"address": "someone@example.org"}],
        "subject": subject, "text": "a copy belongs in Sent",
    })
    assert response.status_code == 200, response.text
    wait_for(lambda: subject in dovecot.fetch_headers(user, "Sent"), timeout=15,
             message="copy in Sent")


def test_wrong_password_reports_authentication_error_once(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    account = add_imap_account(api, dovecot, smtp_sink, dovecot.new_user(), password="wrong")
    wait_for(lambda: state_of(api, account) == "authenticationError", timeout=15,
             message="authenticationError state")
    hook(webhook_receiver, "authenticationError", account)
    details = api.get(f"/v1/account/{account}").json()
    assert "Authentication failed" in details["lastError"]["error"]
    time.sleep(3)
    # No retry loop: still exactly one webhook, no further login attempts.
    assert len([h for h in webhook_receiver.received("authenticationError")
                if h.json["account"] == account]) == 1
    failures = dovecot.log_tail(10_000).count("auth failed")
    assert failures >= 1
    assert state_of(api, account) == "authenticationError"
    time.sleep(2)
    assert dovecot.log_tail(10_000).count("auth failed") == failures

    # Fixing the password takes effect without a restart.
    imap = {**details["imap"], "auth": {"user": details["imap"]["auth"]["user"], "pass": dovecot.password}}
    response = api.put(f"/v1/account/{account}", json={"imap": imap})
    assert response.status_code == 200, response.text
    wait_connected(api, account)


def test_mailboxes_and_messages_are_listed_from_the_index(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    ids = []
    for n in range(3):
        raw, message_id = mail(f"listing {n}", f"{user}@dovecot.test")
        dovecot.deliver(user, raw)
        ids.append(hook(webhook_receiver, "messageNew", account, messageId=message_id)["data"]["id"])

    folders = api.get(f"/v1/account/{account}/mailboxes")
    assert folders.status_code == 200, folders.text
    by_path = {m["path"]: m for m in folders.json()["mailboxes"]}
    assert by_path["Sent"]["specialUse"] == "\\Sent"
    assert by_path["INBOX"]["messages"] == 3

    page = api.get(f"/v1/account/{account}/messages", params={"path": "INBOX", "pageSize": 2})
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 3 and body["pages"] == 2
    assert [m["subject"] for m in body["messages"]] == ["listing 2", "listing 1"]
    assert [m["id"] for m in body["messages"]] == [ids[2], ids[1]]
    second = api.get(f"/v1/account/{account}/messages", params={"page": 1, "pageSize": 2}).json()
    assert [m["subject"] for m in second["messages"]] == ["listing 0"]

    missing = api.get("/v1/account/no-such-account/messages")
    assert missing.status_code == 404
    assert missing.json()["field"] == "account"


def watched(stack: Stack, name: str) -> int:
    """The replica's own count of accounts it watches (its /metrics gauge)."""
    url = stack.services[name].health_url.replace("/health/ready", "/metrics")
    found = re.search(r"^mailgate_imap_accounts_watched (\S+)$", httpx.get(url).text, re.M)
    return int(float(found.group(1))) if found else 0


def test_two_replicas_split_accounts_and_take_over_from_a_dead_one(
    api: httpx.Client, stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    second = stack.add_worker("imap-sync-2", "mailgate-imap-sync", IMAP_SYNC_ENV)
    second.start()
    try:
        users = [dovecot.new_user() for _ in range(10)]
        accounts = [add_imap_account(api, dovecot, smtp_sink, user) for user in users]
        for account in accounts:
            wait_connected(api, account)

        def split_once() -> bool:
            counts = dovecot.connections()
            return (all(counts.get(u) == 1 for u in users)
                    and watched(stack, "imap-sync") > 0 and watched(stack, "imap-sync-2") >= 3)

        wait_for(split_once, timeout=20, message="10 accounts split, one connection each")
        # Stable: no account picked up twice while both replicas keep scanning.
        time.sleep(3)
        assert split_once(), dovecot.connections()

        second.kill(signal.SIGKILL)
        try:
            wait_for(lambda: all(dovecot.connections().get(u) == 1 for u in users)
                     and watched(stack, "imap-sync") >= 10, timeout=30,
                     message="survivor watching every account")
        except AssertionError as exc:
            counts = dovecot.connections()
            raise AssertionError(f"{exc}: connections per user {[counts.get(u, 0) for u in users]}, "
                                 f"survivor watches {watched(stack, 'imap-sync')}") from None
        # Logged in (as Dovecot shows) comes just before the first sync completes.
        for account in accounts:
            wait_connected(api, account)
    finally:
        second.kill(signal.SIGTERM)
        stack.services.pop("imap-sync-2", None)


def test_set_flags_command_flags_the_message_on_the_server(
    api: httpx.Client, stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink,
    webhook_receiver: WebhookReceiver,
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    raw, message_id = mail("answer me", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    data = hook(webhook_receiver, "messageNew", account, messageId=message_id)["data"]

    async def publish() -> None:
        # What the sender publishes after delivering a reply to this message.
        bus = Bus(stack.amqp_url)
        await bus.connect()
        await bus.publish(events.ImapSetFlags(account=account, message=data["id"], add=["\\Answered"]))
        await bus.close()

    asyncio.run(publish())
    updated = hook(webhook_receiver, "messageUpdated", account, id=data["id"])
    assert updated["data"]["changes"] == {"flags": {"added": ["\\Answered"], "value": ["\\Answered"]}}
    flags = dovecot.doveadm("fetch", "-u", user, "flags", "mailbox", "INBOX", "uid", str(data["uid"]))
    assert "\\Answered" in flags
