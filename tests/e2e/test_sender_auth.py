"""Sending like nodemailer: log in only where the server offers AUTH, always with
``smtp.forceAuth``; a server that refuses our login is reported once on the account
(``smtpStatus``, one ``authenticationError`` webhook), its messages fail at once, and
a later success clears the status.

Real servers: the shared stack, an aiosmtpd relay that offers no AUTH, the sink that does.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.outbox import final, submit
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpSink]:
    """A relay that trusts its clients' addresses: it offers no AUTH."""
    sink = SmtpSink(free_port(), auth=False)
    sink.start()
    yield sink
    sink.stop()




def _account(api: httpx.Client, port: int, password: str = PASSWORD.decode(), **smtp: Any) -> str:
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": account_id, "name": "Auth", "email": f"{account_id}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": port, "secure": False,
                 "auth": {"user": account_id, "pass": password}, **smtp},
    })
    assert response.status_code == 200, response.text
    return account_id


def _attempts(stack: Stack, queue_id: str) -> list[asyncpg.Record]:
    return stack.rows("SELECT attempt, outcome, authenticated, error FROM delivery_attempts "
                         "WHERE queue_id = $1 ORDER BY attempt", queue_id)


def _smtp_status(stack: Stack, account: str) -> dict[str, Any] | None:
    [row] = stack.rows("SELECT extra -> 'smtpStatus' AS status FROM accounts WHERE id = $1", account)
    status: dict[str, Any] | None = json.loads(row["status"]) if row["status"] else None
    return status


def _auth_errors(receiver: WebhookReceiver, account: str) -> list[Any]:
    return [h for h in receiver.received("authenticationError") if h.json["account"] == account]


def test_relay_without_auth_gets_the_message_and_the_attempt_says_unauthenticated(
    stack: Stack, api: httpx.Client, relay: SmtpSink, smtp_sink: SmtpSink, account: str,
) -> None:
    trusted = _account(api, relay.port)
    to = f"relay-{uuid.uuid4().hex[:8]}@example.org"
    queue_id = submit(api, trusted, to)
    assert final(api, queue_id)["state"] == "sent"
    [received] = relay.to(to)
    assert received.mail_from == f"{trusted}@sender.test"
    [attempt] = _attempts(stack, queue_id)
    assert (attempt["outcome"], attempt["authenticated"]) == ("sent", False)
    # ... and the outbox API shows it on the attempt.
    [shown] = api.get(f"/v1/outbox/{queue_id}").json()["attemptsLog"]
    assert shown["authenticated"] is False

    # Where AUTH is offered, the sender logs in, and the attempt says so.
    logged_in = submit(api, account, f"auth-{uuid.uuid4().hex[:8]}@example.org")
    assert final(api, logged_in)["state"] == "sent"
    [attempt] = _attempts(stack, logged_in)
    assert attempt["authenticated"] is True


def test_force_auth_against_a_relay_without_auth_fails_each_message_once_and_reports_once(
    stack: Stack, api: httpx.Client, relay: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    forced = _account(api, relay.port, forceAuth=True)
    to = [f"forced-{n}-{uuid.uuid4().hex[:8]}@example.org" for n in range(3)]
    queue_ids = [submit(api, forced, rcpt) for rcpt in to]
    for queue_id in queue_ids:
        entry = final(api, queue_id)
        assert (entry["state"], entry["attemptsMade"]) == ("failed", 1), entry
        assert "does not offer AUTH" in entry["lastError"]
        wait_for(functools.partial(webhook_receiver.received, "messageFailed", queueId=queue_id),
                 message="messageFailed")
    assert all(relay.to(rcpt) == [] for rcpt in to)
    status = _smtp_status(stack, forced)
    assert status is not None
    assert (status["status"], status["code"], status["command"]) == ("error", "EAUTH", "AUTH")
    # One announcement for the change, not one per message.
    wait_for(lambda: _auth_errors(webhook_receiver, forced), message="authenticationError webhook")
    time.sleep(0.5)  # room for a second one, which must not come
    hooks = _auth_errors(webhook_receiver, forced)
    assert len(hooks) == 1
    assert hooks[0].json["data"]["error"].startswith("SMTP")


def test_refused_password_is_reported_once_and_cleared_by_the_next_success(
    stack: Stack, api: httpx.Client, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
) -> None:
    wrong = _account(api, smtp_sink.port, password="not-the-password")
    queue_ids = [submit(api, wrong, f"refused-{n}-{uuid.uuid4().hex[:8]}@example.org") for n in range(3)]
    for queue_id in queue_ids:
        entry = final(api, queue_id)
        # 535 is permanent: failed on its first attempt, never deferred ten times.
        assert (entry["state"], entry["attemptsMade"]) == ("failed", 1), entry
        assert entry["lastError"].startswith("535")
        [attempt] = _attempts(stack, queue_id)
        assert attempt["error"].startswith("EAUTH")
    status = _smtp_status(stack, wrong)
    assert status is not None
    assert (status["status"], status["responseCode"], status["code"]) == ("error", 535, "EAUTH")
    assert status["description"] == "Authentication failed"
    wait_for(lambda: _auth_errors(webhook_receiver, wrong), message="authenticationError webhook")
    time.sleep(0.5)
    assert len(_auth_errors(webhook_receiver, wrong)) == 1

    # The operator fixes the password: the very next message goes out and the status is ok again.
    response = api.put(f"/v1/account/{wrong}", json={"smtp": {
        "host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
        "auth": {"user": wrong, "pass": PASSWORD.decode()}}})
    assert response.status_code == 200, response.text
    to = f"fixed-{uuid.uuid4().hex[:8]}@example.org"
    assert final(api, submit(api, wrong, to))["state"] == "sent"
    assert len(smtp_sink.to(to)) == 1
    status = wait_for(lambda: (s := _smtp_status(stack, wrong)) and s["status"] == "ok" and s,
                      message="smtpStatus ok")
    assert status["response"].startswith("250")
