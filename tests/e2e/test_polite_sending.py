"""Polite sending: per-account limits hold messages back without failing them, a
server's "slow down" rests the account, and other accounts keep full speed."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for
from tests.support.webhook_receiver import WebhookReceiver


def _account(api: httpx.Client, sink: SmtpSink, limits: dict[str, int] | None = None) -> str:
    account = f"polite-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "account": account, "email": f"{account}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": sink.port, "auth": {"user": account, "pass": "smtp-password"}},
    }
    if limits:
        body["limits"] = limits
    assert api.post("/v1/account", json=body).status_code == 200
    return account


def _submit(api: httpx.Client, account: str, to: str) -> str:
    response = api.post(f"/v1/account/{account}/submit", json={"to": [{"address": to}], "text": "x"})
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def test_rate_limit_holds_messages_without_failing_them_and_spares_other_accounts(
    api: httpx.Client, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    limited = _account(api, smtp_sink, {"perDay": 3})
    assert api.get(f"/v1/account/{limited}").json()["limits"] == {"perDay": 3}
    free = _account(api, smtp_sink)
    tag = uuid.uuid4().hex[:6]
    held = [_submit(api, limited, f"lim-{tag}-{i}@example.org") for i in range(6)]
    fast = [_submit(api, free, f"free-{tag}-{i}@example.org") for i in range(6)]

    wait_for(lambda: all(smtp_sink.to(f"free-{tag}-{i}@example.org") for i in range(6)),
             message="the unlimited account's messages")
    wait_for(lambda: sum(bool(smtp_sink.to(f"lim-{tag}-{i}@example.org")) for i in range(6)) == 3,
             message="three messages within the limit")

    def held_back() -> list[dict[str, Any]]:
        entries = [api.get(f"/v1/outbox/{q}").json() for q in held]
        waiting = [e for e in entries if e["state"] == "queued" and e.get("lastError")]
        return waiting if len(waiting) == 3 else []

    queued = wait_for(held_back, message="three messages held by the limit")
    time.sleep(1.5)
    assert sum(bool(smtp_sink.to(f"lim-{tag}-{i}@example.org")) for i in range(6)) == 3
    for entry in queued:
        assert entry["attemptsMade"] == 0 and "limit" in entry["lastError"]
        assert entry["nextAttempt"] > entry["created"]
    for queue_id in held:
        assert webhook_receiver.received("messageDeliveryError", queueId=queue_id) == []
    assert all(api.get(f"/v1/outbox/{q}").json()["state"] == "sent" for q in fast)


def test_slow_down_reply_rests_the_account_without_spending_attempts(
    api: httpx.Client, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    account = _account(api, smtp_sink)
    to = f"throttle1-{uuid.uuid4().hex[:8]}@example.org"
    queue_id = _submit(api, account, to)
    wait_for(lambda: smtp_sink.to(to), timeout=20, message="delivery after the rest")
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id), message="messageSent")
    entry = api.get(f"/v1/outbox/{queue_id}").json()
    assert entry["state"] == "sent" and entry["attemptsMade"] == 1
    assert [a["outcome"] for a in entry["attemptsLog"]] == ["throttled", "sent"]
    assert entry["attemptsLog"][0]["smtpResponseCode"] == 421
    assert webhook_receiver.received("messageDeliveryError", queueId=queue_id) == []
    assert api.get(f"/v1/account/{account}").json().get("throttledUntil") is None


def test_limits_are_validated(api: httpx.Client, smtp_sink: SmtpSink) -> None:
    response = api.post("/v1/account", json={
        "account": f"bad-{uuid.uuid4().hex[:6]}", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port}, "limits": {"perMinute": 0}})
    assert response.status_code == 400 and response.json()["field"] == "limits.perMinute"


def _in_state(api: httpx.Client, account: str, state: str) -> int:
    response = api.get("/v1/outbox", params={"account": account, "state": state})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def test_connection_limited_backlog_leaves_other_accounts_at_full_speed(
    api: httpx.Client, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    limited = _account(api, smtp_sink, {"connections": 1})
    other = _account(api, smtp_sink)
    tag = uuid.uuid4().hex[:6]
    # A burst of more messages than the sender has SMTP exchanges at once (32), to a
    # server that takes 2 s over each: some 80 s of work through its one connection.
    backlog = [_submit(api, limited, f"slow-{tag}-{i}@example.org") for i in range(40)]
    wait_for(lambda: _in_state(api, limited, "sending"), message="the backlog being worked")

    quick = [f"quick-{tag}-{i}@example.org" for i in range(10)]
    fast = [_submit(api, other, to) for to in quick]
    in_progress: list[int] = []

    def other_account_delivered() -> bool:
        in_progress.append(_in_state(api, limited, "sending"))
        return all(smtp_sink.to(to) for to in quick)

    wait_for(other_account_delivered, timeout=30, message="the other account's messages")
    delivered = sum(bool(smtp_sink.to(f"slow-{tag}-{i}@example.org")) for i in range(40))
    assert delivered < len(backlog), "the other account waited for the whole backlog"
    # The limited account's messages are taken one connection's worth at a time (one
    # in its SMTP exchange, perhaps one more whose outcome is being written), the
    # rest left queued rather than claimed to wait.
    assert max(in_progress) <= 2
    assert all(api.get(f"/v1/outbox/{q}").json()["state"] == "sent" for q in fast)

    entries = [api.get(f"/v1/outbox/{q}").json() for q in backlog]
    waiting = [e for e in entries if e["state"] == "queued"]
    assert waiting, "the backlog is still being worked"
    # Waiting for a connection is neither an attempt nor a failure.
    assert all(e["attemptsMade"] == 0 and not e.get("lastError") for e in waiting)
    assert all(e["state"] in ("queued", "sending", "sent") for e in entries)
    for queue_id in backlog:
        assert webhook_receiver.received("messageDeliveryError", queueId=queue_id) == []
    for entry in waiting:  # no need to sit through the rest of the backlog
        api.delete(f"/v1/outbox/{entry['queueId']}")
