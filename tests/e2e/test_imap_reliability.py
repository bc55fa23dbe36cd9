"""imap-sync against big and hostile mailboxes, real Dovecot and a real hostile server:
a 20,000-message INBOX, headers PostgreSQL cannot store as sent, a crafted
"bounce" built to be slow to parse, a burst of Sent copies, a server that
streams without end, a message too large to read through the API, and an
account that may only use public mail servers."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from tests.e2e.test_imap_sync import add_imap_account, hook, mail, state_of, wait_connected
from tests.support.dovecot import Dovecot
from tests.support.hostile_imap import HostileImap
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # imap-sync's default imap_max_response_bytes


def listed(api: httpx.Client, account: str, page_size: int = 20) -> list[dict[str, Any]]:
    response = api.get(f"/v1/account/{account}/messages", params={"path": "INBOX", "pageSize": page_size})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def small_message(n: int) -> bytes:
    return (f"From: Filler <filler@example.org>\r\nTo: someone@dovecot.test\r\nSubject: old mail {n}\r\n"
            f"Message-ID: <old-{n}@example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n"
            f"message {n}\r\n").encode()


def test_a_20000_message_inbox_connects_and_then_announces_new_mail_within_5_s(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    dovecot.fill(user, 20_000, small_message)
    account = add_imap_account(api, dovecot, smtp_sink, user)
    try:
        wait_for(lambda: state_of(api, account) == "connected", timeout=240, interval=0.5,
                 message=f"{account} connected after indexing 20,000 messages")
        mailboxes = {m["path"]: m for m in api.get(f"/v1/account/{account}/mailboxes").json()["mailboxes"]}
        assert mailboxes["INBOX"]["messages"] == 20_000
        assert api.get(f"/v1/account/{account}/messages", params={"pageSize": 1}).json()["total"] == 20_000
        # Existing mail was indexed, not announced.
        assert not [h for h in webhook_receiver.received("messageNew") if h.json["account"] == account]

        raw, message_id = mail("new after twenty thousand", f"{user}@dovecot.test")
        dovecot.deliver(user, raw)
        new = hook(webhook_receiver, "messageNew", account, timeout=5, messageId=message_id)
        assert new["data"]["subject"] == "new after twenty thousand"
        assert listed(api, account, 1)[0]["messageId"] == message_id
    finally:
        # Later tests start and stop replicas: they need not move a 20,000-message mailbox around.
        assert api.delete(f"/v1/account/{account}").status_code == 200


def test_a_header_postgresql_cannot_store_is_cleaned_and_blocks_nothing(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    # "YQBi" is base64 for "a\0b": decoded, the subject and the sender's name hold a NUL.
    nul_id = f"<nul-{uuid.uuid4().hex[:8]}@example.org>"
    dovecot.deliver(user, (f"From: =?utf-8?b?YQBi?= <nul@example.org>\r\nTo: {user}@dovecot.test\r\n"
                           f"Subject: =?utf-8?b?YQBi?=\r\nMessage-ID: {nul_id}\r\n\r\nbody\r\n").encode())
    raw, message_id = mail("the one after", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)

    hook(webhook_receiver, "messageNew", account, messageId=message_id)
    by_id = {m["messageId"]: m for m in wait_for(lambda: len(listed(api, account)) == 2 and listed(api, account))}
    assert by_id[message_id]["subject"] == "the one after"
    assert by_id[nul_id]["subject"] == "a\ufffdb"
    assert by_id[nul_id]["from"] == {"name": "a\ufffdb", "address": "nul@example.org"}
    assert hook(webhook_receiver, "messageNew", account, messageId=nul_id)["data"]["subject"] == "a\ufffdb"


def test_a_crafted_120_kb_bounce_does_not_stall_the_replica(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    # The shape that took the parser 90 s (reliability review, repro/redos3.py).
    crafted = (b"From: MAILER-DAEMON@example.net\r\nTo: " + f"{user}@dovecot.test".encode()
               + b"\r\nSubject: Undelivered Mail Returned to Sender\r\nContent-Type: text/plain\r\n\r\n"
               + b"The following address failed:\r\n" + b"x" * (120 * 1024) + b"\r\n")
    dovecot.deliver(user, crafted)
    raw, message_id = mail("right behind the crafted bounce", f"{user}@dovecot.test")
    dovecot.deliver(user, raw)
    hook(webhook_receiver, "messageNew", account, timeout=10, messageId=message_id)
    assert not [h for h in webhook_receiver.received("messageBounce") if h.json["account"] == account]


def test_a_burst_of_sent_copies_logs_in_at_most_twice(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    before = dovecot.logins(user)
    tag = uuid.uuid4().hex[:6]
    subjects = [f"burst {tag} {n}" for n in range(25)]
    for subject in subjects:
        response = api.post(f"/v1/account/{account}/submit", json={
            "from": {"address": f"{user}@dovecot.test"}, "to": [{"address": f"burst-{tag}@example.org"}],
            "subject": subject, "text": "one of many",
        })
        assert response.status_code == 200, response.text
    wait_for(lambda: set(subjects) <= set(dovecot.fetch_headers(user, "Sent")), timeout=60, interval=0.5,
             message="every copy in Sent")
    assert sorted(dovecot.fetch_headers(user, "Sent")) == sorted(subjects)  # each once
    assert dovecot.logins(user) - before <= 2


def test_a_redelivered_sent_copy_is_not_made_twice(
    api: httpx.Client, stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    subject = f"copied once {uuid.uuid4().hex[:6]}"
    response = api.post(f"/v1/account/{account}/submit", json={
        "from": {"address": f"{user}@dovecot.test"}, "to": [{"address": "someone@example.org"}],
        "subject": subject, "text": "x",
    })
    assert response.status_code == 200, response.text
    wait_for(lambda: subject in dovecot.fetch_headers(user, "Sent"), timeout=15, message="copy in Sent")

    async def redeliver() -> None:
        # What RabbitMQ does when the first delivery's ack was lost.
        bus = Bus(stack.amqp_url)
        await bus.connect()
        await bus.publish(events.ImapAppendSent(account=account, queue_id=response.json()["queueId"]))
        await bus.close()

    dead = imap_sync_queues(stack)["mailgate.imap-sync.dlq"]
    asyncio.run(redeliver())
    wait_for(lambda: handled(stack), timeout=15, message="the redelivered command handled")
    assert imap_sync_queues(stack)["mailgate.imap-sync.dlq"] == dead
    assert dovecot.fetch_headers(user, "Sent").count(subject) == 1


def imap_sync_queues(stack: Stack) -> dict[str, int]:
    """Messages ready or unacknowledged in imap-sync's queues (main, retries, dead letters)."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", stack.vhost, "name", "messages",
                             "messages_unacknowledged"], check=True, capture_output=True, text=True).stdout
    counts = {}
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("mailgate.imap-sync") and parts[1].isdigit():
            counts[parts[0]] = int(parts[1]) + int(parts[2])
    return counts


def handled(stack: Stack) -> bool:
    return not any(n for name, n in imap_sync_queues(stack).items() if not name.endswith(".dlq"))


@pytest.fixture(params=["huge_literal", "endless"])
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileImap]:
    server = HostileImap(free_port(), request.param, stop_after=4 * MAX_RESPONSE_BYTES)
    server.start()
    yield server
    server.stop()


def rss_kib(stack: Stack, name: str) -> int:
    proc = stack.services[name].proc
    assert proc is not None
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_a_server_that_sends_without_end_is_dropped_at_the_byte_bound(
    api: httpx.Client, stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink,
    webhook_receiver: WebhookReceiver, hostile: HostileImap,
) -> None:
    rss_before = rss_kib(stack, "imap-sync")
    victim = f"hostile-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/account", json={
        "account": victim, "email": "victim@hostile.test",
        "imap": {"host": "127.0.0.1", "port": hostile.port, "secure": False,
                 "auth": {"user": "victim", "pass": "x"}},
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False},
    })
    assert response.status_code == 200, response.text
    try:
        # The client, not the server, ends the session: at the bound, not after it.
        wait_for(lambda: any(s.closed_by_client for s in hostile.sessions), timeout=60,
                 message="imap-sync dropping the connection")
        dropped = next(s for s in hostile.sessions if s.closed_by_client)
        assert dropped.sent <= MAX_RESPONSE_BYTES + 16 * 1024 * 1024
        wait_for(lambda: "bytes" in ((api.get(f"/v1/account/{victim}").json().get("lastError") or {})
                                     .get("error") or ""), message="the bound named in lastError")

        # The replica stays healthy: ready, its memory bounded, other accounts still synced.
        assert httpx.get(stack.services["imap-sync"].health_url).status_code == 200
        assert rss_kib(stack, "imap-sync") - rss_before < 2 * MAX_RESPONSE_BYTES // 1024
        user = dovecot.new_user()
        account = add_imap_account(api, dovecot, smtp_sink, user)
        wait_connected(api, account)
        raw, message_id = mail("while a hostile server streams", f"{user}@dovecot.test")
        dovecot.deliver(user, raw)
        hook(webhook_receiver, "messageNew", account, messageId=message_id)
    finally:
        assert api.delete(f"/v1/account/{victim}").status_code == 200


def test_a_message_too_large_for_the_api_is_refused_with_413(
    api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "big@example.org", f"{user}@dovecot.test", "too big to read"
    msg["Message-ID"] = message_id = f"<big-{uuid.uuid4().hex[:8]}@example.org>"
    msg.set_content("attached\n")
    # Over imap_fetch_max_bytes (12 MiB) once base64-encoded.
    msg.add_attachment(b"\0" * (10 * 1024 * 1024), maintype="application", subtype="octet-stream")
    dovecot.deliver(user, msg.as_bytes())
    data = hook(webhook_receiver, "messageNew", account, messageId=message_id)["data"]
    assert data["size"] > 12 * 1024 * 1024

    response = api.get(f"/v1/account/{account}/message/{data['id']}")
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "message"
    assert "bytes" in response.json()["message"]


async def _limit_to_public_hosts(database_url: str, account: str) -> None:
    # What the api stores when an account-scoped token saves the settings while
    # the operator allows only public mail servers (account_hosts_allow_private=false).
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as session:
            await session.execute(text("""UPDATE accounts SET extra = extra || '{"publicHostsOnly": true}'
                                          WHERE id = :id"""), {"id": account})
    finally:
        await db.dispose()


def test_an_account_limited_to_public_hosts_does_not_connect_to_a_private_one(
    api: httpx.Client, stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.new_user()
    account = add_imap_account(api, dovecot, smtp_sink, user)
    wait_connected(api, account)
    asyncio.run(_limit_to_public_hosts(stack.database_url, account))
    # The watcher reconnects with the new policy (the heartbeat sees it changed).
    wait_for(lambda: state_of(api, account) == "connectError", timeout=20, message="connectError")
    error = api.get(f"/v1/account/{account}").json()["lastError"]["error"]
    assert "127.0.0.1" in error and "public mail servers" in error
    assert user not in dovecot.connections()
