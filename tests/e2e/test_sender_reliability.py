"""The sender never sends a message twice on its own, and never loops or hangs, whatever
the server does: replies in Latin-1 or with NUL, slow or missing verdicts on the
final dot, a server that stops reading mid-message, deliveries that keep getting
killed, exchanges longer than a claim, bursts of large messages.

Real servers throughout: the shared stack's services, the aiosmtpd sink, and a
raw-socket server that misbehaves on purpose (tests/support/hostile_smtp.py).
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosmtplib
import httpx
import pytest
import uvloop

from mailgate_sender.smtp_client import SmtpPool, SmtpServer
from mailgate_sender.smtp_connection import SmtpConnection
from tests.support.hostile_smtp import HostileSmtp
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import Service, Stack, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

CLAIM_TIMEOUT = 6.0  # MAILGATE_SENDER_CLAIM_TIMEOUT of the test stack
MAX_TAKEOVERS = 3  # the default sender_max_takeovers
FINAL = {"sent", "failed", "unknown", "cancelled"}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileSmtp]:
    server = HostileSmtp(free_port())
    server.start()
    yield server
    server.stop()


def _create_account(api: httpx.Client, port: int, **extra: Any) -> str:
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": account_id, "name": "Reliability", "email": f"{account_id}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": port, "secure": False,
                 "auth": {"user": account_id, "pass": PASSWORD.decode()}},
        **extra,
    })
    assert response.status_code == 200, response.text
    return account_id


@pytest.fixture
def hostile_account(api: httpx.Client, hostile: HostileSmtp) -> str:
    """An account whose SMTP server is the hostile one (which offers no AUTH)."""
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": account_id, "name": "Hostile", "email": f"{account_id}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": hostile.port, "secure": False},
    })
    assert response.status_code == 200, response.text
    return account_id


def _rcpt(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def _submit(api: httpx.Client, account: str, to: str, **body: Any) -> str:
    response = api.post(f"/v1/account/{account}/submit",
                        json={"to": [{"address": to}], "subject": "reliability", "text": "x", **body})
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def _submit_raw(api: httpx.Client, account: str, to: str, raw: bytes) -> str:
    response = api.post(f"/v1/account/{account}/submit", json={"raw": base64.b64encode(raw).decode()}, timeout=120)
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def _large(to: str, size: int) -> bytes:
    """A message of about ``size`` bytes: long lines, none starting with a dot."""
    line = b"x" * 998 + b"\r\n"
    return (f"From: big@sender.test\r\nTo: {to}\r\nSubject: large\r\n\r\n".encode()
            + line * (size // len(line)))


def _entry(api: httpx.Client, queue_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/outbox/{queue_id}")
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()
    return entry


def _final(api: httpx.Client, queue_id: str) -> dict[str, Any] | None:
    entry = _entry(api, queue_id)
    return entry if entry["state"] in FINAL else None


@contextmanager
def _replaced_sender(stack: Stack, name: str, **env: str) -> Iterator[Service]:
    """The shared sender stopped, and one with ``env`` (MAILGATE_* settings) in its place;
    the shared one is back, healthy, afterwards."""
    shared = stack.services["sender"]
    shared.kill(signal.SIGTERM)
    own = stack.add_worker(name, "mailgate-sender", env)
    try:
        own.start()
        yield own
    finally:
        own.kill()
        shared.start()


def _peak_rss_mib(service: Service) -> float:
    assert service.proc is not None
    with open(f"/proc/{service.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# --- replies no database or event can hold -------------------------------------


def test_a_latin1_or_nul_reply_fails_its_message_alone_and_the_others_are_sent_once(
    api: httpx.Client, hostile_account: str, hostile: HostileSmtp, webhook_receiver: WebhookReceiver,
) -> None:
    started = time.monotonic()
    good = [_rcpt("ok") for _ in range(12)]
    latin1, nul = _rcpt("latin1"), _rcpt("nul")
    queue_ids = {to: _submit(api, hostile_account, to) for to in [*good[:6], latin1, nul, *good[6:]]}

    wait_for(lambda: all(_final(api, q) for q in queue_ids.values()), timeout=40,
             message="every message finished")
    # Whatever went wrong would have been taken over (and sent again) by now.
    time.sleep(max(0.0, 2 * CLAIM_TIMEOUT + 1 - (time.monotonic() - started)))
    assert [hostile.count(to) for to in good] == [1] * len(good)
    assert all(_entry(api, queue_ids[to])["state"] == "sent" for to in good)

    refused = _entry(api, queue_ids[latin1])
    assert refused["state"] == "failed" and refused["attemptsMade"] == 1
    assert "550 5.1.1 Empfänger unbekannt" in refused["lastError"]
    [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_ids[latin1]),
                        message="messageFailed for the Latin-1 refusal")
    assert "Empfänger unbekannt" in failed.json["data"]["error"]
    refused = _entry(api, queue_ids[nul])
    assert refused["state"] == "failed"
    assert "550 5.1.1 Unknown\ufffduser" in refused["lastError"]
    assert hostile.count(latin1) == hostile.count(nul) == 0


# --- the verdict on the final dot ------------------------------------------------


def test_an_exchange_longer_than_its_claim_keeps_it_and_is_sent_once_by_one_of_two_senders(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink,
) -> None:
    # The server answers the final dot after 10 s: longer than a command's
    # timeout (5 s) and than a claim (6 s); a second sender is looking for lapsed claims.
    other = stack.add_worker("sender-2", "mailgate-sender")
    other.start()
    try:
        to = _rcpt("slowdot10")
        queue_id = _submit(api, account, to)
        entry = wait_for(lambda: _final(api, queue_id), timeout=40, message="the slow message finished")
        time.sleep(CLAIM_TIMEOUT / 2)  # a takeover's copy would be on its way by now
    finally:
        other.kill()
    assert len(smtp_sink.to(to)) == 1
    assert entry["state"] == "sent" and entry["attemptsMade"] == 1
    assert [a["outcome"] for a in entry["attemptsLog"]] == ["sent"]


def test_a_connection_lost_after_the_final_dot_ends_unknown_and_is_not_sent_again(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    to = _rcpt("hangup")  # the sink keeps the message, then hangs up without a verdict
    queue_id = _submit(api, account, to)
    [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_id), timeout=20,
                        message="messageFailed")
    data = failed.json["data"]
    assert data["outcomeUnknown"] is True and "may have delivered" in data["error"]
    [error] = webhook_receiver.received("messageDeliveryError", queueId=queue_id)
    assert error.json["data"]["job"]["nextAttempt"] is False
    entry = _entry(api, queue_id)
    assert entry["state"] == "unknown" and entry["attemptsMade"] == 1
    time.sleep(3)  # a retry (base 1 s) would have gone out by now
    assert len(smtp_sink.to(to)) == 1
    assert _entry(api, queue_id)["state"] == "unknown"


def test_an_account_can_opt_in_to_retrying_an_unknown_outcome(
    api: httpx.Client, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    account = _create_account(api, smtp_sink.port, retryUnknownOutcome=True)
    to = _rcpt("hangup")
    queue_id = _submit(api, account, to, deliveryAttempts=2)
    [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_id), timeout=20,
                        message="messageFailed after the retry")
    assert failed.json["data"]["outcomeUnknown"] is True
    errors = webhook_receiver.received("messageDeliveryError", queueId=queue_id)
    assert [e.json["data"]["job"]["attemptsMade"] for e in errors] == [1, 2]
    assert len(smtp_sink.to(to)) == 2  # what the account accepted by opting in
    assert _entry(api, queue_id)["state"] == "failed"


def test_a_server_that_never_answers_the_final_dot_leaves_the_outcome_unknown(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    with _replaced_sender(stack, "sender-short-verdict", MAILGATE_SMTP_DATA_TIMEOUT="3"):
        to = _rcpt("silent")
        queue_id = _submit(api, account, to)
        [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_id), timeout=30,
                            message="messageFailed")
        assert failed.json["data"]["outcomeUnknown"] is True
        entry = _entry(api, queue_id)
        assert entry["state"] == "unknown"
        assert "No reply after the message was sent" in entry["lastError"]
        time.sleep(2)
        assert len(smtp_sink.to(to)) == 1


def test_a_trickled_reply_is_cut_at_its_deadline(hostile: HostileSmtp) -> None:
    """A server sending its reply a byte at a time cannot hold a command past its timeout."""

    async def deliver() -> str:
        pool = SmtpPool(timeout=1.0, helo_name="sender.test")
        server = SmtpServer("127.0.0.1", hostile.port, secure=False, user=None, password=None)
        try:
            outcome = await pool.deliver(server, "a@sender.test", [_rcpt("trickle")], b"Subject: x\r\n\r\nx\r\n")
        finally:
            pool.close()
        return f"{outcome.kind} {outcome.error_code} {outcome.command}"

    cut = hostile.trickles_cut
    assert asyncio.run(deliver()) == "temporary ETIMEDOUT RCPT TO"
    wait_for(lambda: hostile.trickles_cut == cut + 1, message="the client hung up mid-reply")


# --- the message body -------------------------------------------------------------


def test_a_body_upload_the_server_stops_reading_is_aborted_then_sent_once(
    api: httpx.Client, hostile_account: str, hostile: HostileSmtp, webhook_receiver: WebhookReceiver,
) -> None:
    # The first time, the server reads 64 KiB and then nothing for 10 s: the
    # message cannot leave.  A sender that closed (flushing) instead of aborting
    # would complete the message when reading resumes, and then send it again.
    to = _rcpt("stall")
    stalls = hostile.stalls_over
    queue_id = _submit_raw(api, hostile_account, to, _large(to, 16 * 1024 * 1024))
    entry = wait_for(lambda: _final(api, queue_id), timeout=60, message="the stalled message finished")
    assert entry["state"] == "sent"
    assert [a["outcome"] for a in entry["attemptsLog"]] == ["deferred", "sent"]
    assert "ETIMEDOUT" in entry["attemptsLog"][0]["error"]
    wait_for(lambda: hostile.stalls_over > stalls, timeout=20, message="the stalled session read on")
    [arrived] = hostile.arrived(to)
    assert arrived.size > 16 * 1000 * 1000


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_message_left_in_our_buffers_is_cut_off_never_completed_later(loop: str) -> None:
    """The whole message, final dot included, is written but cannot leave (the peer
    reads nothing): giving up must drop it, or the server would complete it later."""
    body = b"Subject: stuck\r\n\r\n" + (b"z" * 998 + b"\r\n") * 200

    async def scenario() -> tuple[bytes, str]:
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setblocking(False)
        running = asyncio.get_running_loop()
        transport, _ = await running.create_connection(asyncio.Protocol, sock=ours)
        connection = SmtpConnection(transport, {}, timeout=0.5, data_timeout=5)
        with pytest.raises(aiosmtplib.SMTPTimeoutError) as failure:
            await connection.send_body(body)
        await asyncio.sleep(0.1)
        received = bytearray()
        while chunk := await running.sock_recv(theirs, 1 << 20):  # the server reads again
            received += chunk
        theirs.close()
        return bytes(received), str(failure.value)

    received, error = (uvloop.run if loop == "uvloop" else asyncio.run)(scenario())
    assert "the server stopped reading" in error
    assert 0 < len(received) < len(body) and not received.endswith(b"\r\n.\r\n")


@pytest.mark.timeout(400)
def test_thirty_20mb_messages_go_out_once_each_within_the_body_budget(
    stack: Stack, api: httpx.Client, hostile_account: str, hostile: HostileSmtp,
) -> None:
    budget_mib = 64
    recipients = [_rcpt("big") for _ in range(30)]
    started = time.monotonic()
    with _replaced_sender(stack, "sender-small-budget",
                          MAILGATE_SENDER_BODY_BUDGET=str(budget_mib * 1024 * 1024)) as sender:
        body = _large("placeholder@example.org", 20 * 1024 * 1024)
        queue_ids = [_submit_raw(api, hostile_account, to, body.replace(b"placeholder@example.org", to.encode()))
                     for to in recipients]
        del body
        wait_for(lambda: all(_final(api, q) for q in queue_ids), timeout=240, interval=1,
                 message="all 30 large messages finished")
        peak = _peak_rss_mib(sender)
        print(f"sender peak RSS {peak:.0f} MiB; {time.monotonic() - started:.0f} s")
    assert [hostile.count(to) for to in recipients] == [1] * 30
    assert all(_entry(api, q)["state"] == "sent" for q in queue_ids)
    assert len({m.sha256 for to in recipients for m in hostile.arrived(to)}) == 30
    # 30 × 20 MB claimed at once would need 600 MB; the budget lets a few in at a time.
    assert peak < budget_mib + 150, f"the sender peaked at {peak:.0f} MiB"


# --- deliveries that never end on their own -------------------------------------


def test_a_message_whose_delivery_keeps_being_killed_ends_failed_and_others_flow(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    sender = stack.services["sender"]
    poison = _rcpt("slowrcpt")  # the sink holds RCPT for 3 s: the message is mid-exchange
    queue_id = _submit(api, account, poison)
    others: list[str] = []
    for interruption in range(1, MAX_TAKEOVERS + 1):
        def under_way(n: int = interruption) -> bool:
            return smtp_sink.handler.offered[poison] >= n

        wait_for(under_way, timeout=30, message=f"delivery {interruption} under way")
        sender.kill()
        if interruption == MAX_TAKEOVERS:
            others = [_rcpt("bystander") for _ in range(5)]
            for to in others:
                _submit(api, account, to)
        sender.start()
    [failed] = wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_id), timeout=30,
                        message="messageFailed after the last takeover")
    assert "interrupted 3 times" in failed.json["data"]["error"]
    entry = _entry(api, queue_id)
    assert entry["state"] == "failed"
    wait_for(lambda: all(smtp_sink.to(to) for to in others), timeout=20, message="the other messages sent")
    time.sleep(1)
    assert smtp_sink.handler.offered[poison] == MAX_TAKEOVERS and smtp_sink.to(poison) == []
    assert [len(smtp_sink.to(to)) for to in others] == [1] * len(others)


# --- an account's settings change --------------------------------------------------


def test_idle_connections_with_an_accounts_old_settings_are_closed(
    api: httpx.Client, account: str, smtp_sink: SmtpSink,
) -> None:
    first = _rcpt("old-settings")
    _submit(api, account, first)
    wait_for(lambda: smtp_sink.to(first), message="sent with the old settings")
    [old_session] = smtp_sink.sessions_of(account)
    renamed = f"{account}-renamed"
    response = api.put(f"/v1/account/{account}", json={"smtp": {
        "host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
        "auth": {"user": renamed, "pass": PASSWORD.decode()}}})
    assert response.status_code == 200, response.text

    def sent_with_new_settings() -> bool:
        to = _rcpt("new-settings")
        _submit(api, account, to)
        wait_for(lambda: smtp_sink.to(to), message="sent")
        return bool(smtp_sink.sessions_of(renamed))

    # The sender re-reads an account's settings every few seconds.
    wait_for(sent_with_new_settings, timeout=30, interval=1, message="a message sent with the new settings")
    wait_for(lambda: old_session.transport is None, timeout=5, message="the old connection closed")


def test_a_sender_stopped_while_waiting_for_a_verdict_records_it_unknown_not_resent(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    # A server scanning a message for a minute, and a sender told to stop meanwhile
    # (a deploy): after its grace period it must say "unknown", not leave the
    # claim to lapse and the message to be sent again by whoever takes it over.
    sender = stack.services["sender"]
    to = _rcpt("slowdot60")
    queue_id = _submit(api, account, to)
    wait_for(lambda: smtp_sink.to(to), timeout=20, message="the message at the server")
    try:
        assert sender.kill(signal.SIGTERM) == 0
    finally:
        sender.start()
    entry = _entry(api, queue_id)
    assert entry["state"] == "unknown", entry
    assert "the sender is stopping" in entry["lastError"]
    wait_for(lambda: webhook_receiver.received("messageFailed", queueId=queue_id), message="messageFailed")
    time.sleep(CLAIM_TIMEOUT + 1)  # a lapsed claim would have been taken over by now
    assert len(smtp_sink.to(to)) == 1
