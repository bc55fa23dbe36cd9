"""The seed systems' SMTP gates at the submission door: a token bound to one account
logs in with any username - empty (enKod's clients) or ``apikey`` (OpenSend's) - and
the account comes from the token; an unbound token still needs the account id.

Real clients (smtplib, swaks) against the running smtp-ingress service.
"""

from __future__ import annotations

import base64
import smtplib
import subprocess
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.tokens import create_token

HOST = "127.0.0.1"


def _rcpt(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content("through the gate")
    return message


def _queued_account(api: httpx.Client, reply: str) -> str:
    queue_id = reply.split(" as ", 1)[1].split(" ", 1)[0]
    entry: dict[str, Any] = api.get(f"/v1/outbox/{queue_id}").json()
    account: str = entry["account"]
    return account


@pytest.fixture
def bound_token(stack: Stack, account: str) -> str:
    return create_token(stack.database_url, account, ["smtp"])


@pytest.mark.parametrize("username", ["", "apikey"], ids=["empty-username", "apikey"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_with_a_bound_token_and_any_username(
    stack: Stack, api: httpx.Client, account: str, bound_token: str, smtp_sink: SmtpSink,
    username: str, mechanism: str,
) -> None:
    to = _rcpt("gate")
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        client.ehlo()
        client.user, client.password = username, bound_token
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert code == 235
        client.send_message(_message(f"{account}@sender.test", to, f"gate {mechanism} {username!r}"))
        # smtplib keeps no reply of DATA: ask the outbox which account the message went to.
    [received] = wait_for(lambda: smtp_sink.to(to), message="delivery through the gate")
    assert received.mail_from == f"{account}@sender.test"
    entries = api.get("/v1/outbox", params={"state": "all", "account": account}).json()["messages"]
    assert [e for e in entries if to in e["envelope"]["to"]]


@pytest.mark.parametrize("username", ["", "apikey"], ids=["empty-username", "apikey"])
def test_swaks_with_a_bound_token(
    stack: Stack, api: httpx.Client, account: str, bound_token: str, smtp_sink: SmtpSink, username: str,
) -> None:
    to = _rcpt("swaks-gate")
    # swaks asks for a value given as an empty argument: the empty line answers it.
    result = subprocess.run(
        ["swaks", "--server", f"{HOST}:{stack.smtp_port}", "--auth", "PLAIN",
         "--auth-user", username, "--auth-password", bound_token,
         "--from", f"{account}@sender.test", "--to", to,
         "--header", "Subject: swaks gate", "--body", "through the gate"],
        capture_output=True, text=True, timeout=30, input="\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  235" in result.stdout
    [auth] = [line for line in result.stdout.splitlines() if line.startswith(" -> AUTH PLAIN ")]
    assert base64.b64decode(auth.split()[-1]) == b"\0" + username.encode() + b"\0" + bound_token.encode()
    [reply] = [line for line in result.stdout.splitlines() if "Message queued for delivery as" in line]
    assert _queued_account(api, reply) == account
    wait_for(lambda: smtp_sink.to(to), message="swaks delivery through the gate")


def _login(stack: Stack, username: str, password: str) -> int:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        client.ehlo()
        try:
            client.login(username, password)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return 235


def test_an_unbound_token_needs_the_account_id(stack: Stack, account: str) -> None:
    unbound = create_token(stack.database_url, None, ["smtp"])
    assert _login(stack, "", unbound) == 535
    assert _login(stack, "apikey", unbound) == 535
    assert _login(stack, account, unbound) == 235


def test_a_bound_token_does_not_send_as_another_named_account(
    stack: Stack, api: httpx.Client, account: str, bound_token: str, smtp_sink: SmtpSink,
) -> None:
    other = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": other, "name": "Other", "email": f"{other}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "auth": {"user": other, "pass": "x"}},
    })
    assert response.status_code == 200, response.text
    assert _login(stack, other, bound_token) == 535
    assert _login(stack, account, bound_token) == 235
    assert _login(stack, "", "not-a-token") == 535
