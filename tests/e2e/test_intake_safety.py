"""The doors under hostile or careless input: bounded memory, clear refusals, nothing
half-stored, no secrets shown to the wrong caller.

A second API and a second SMTP ingress run with small limits (and the production
defaults for private addresses), so the limits can be reached with small messages.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import BIN, Stack, free_port, wait_for
from tests.support.tokens import create_token
from tests.support.webhook_receiver import WebhookReceiver

SMALL_LIMIT = 100_000  # bytes: MAILGATE_MAX_MESSAGE_SIZE of the strict doors
API_BUDGET = 3 * 150_000  # one request declaring 150 kB fills it (3 copies are counted)


@pytest.fixture(scope="module")
def strict_api(stack: Stack) -> Iterator[str]:
    """A second API: small messages only, a small body budget, private hosts refused."""
    port = free_port()
    service = stack.add_service("api-intake", "mailgate-api", f"http://127.0.0.1:{port}/health", {
        "MAILGATE_API_PORT": str(port),
        "MAILGATE_MAX_MESSAGE_SIZE": str(SMALL_LIMIT),
        "MAILGATE_API_BODY_BUDGET": str(API_BUDGET),
        "MAILGATE_WEBHOOKS_ALLOW_PRIVATE": "false",
        "MAILGATE_ACCOUNT_HOSTS_ALLOW_PRIVATE": "false",
    })
    service.start()
    yield f"http://127.0.0.1:{port}"
    service.kill()


@pytest.fixture(scope="module")
def strict_smtp(stack: Stack) -> Iterator[int]:
    """A second SMTP ingress: three connections at most, room for one 150 kB message at a time."""
    service = stack.add_smtp_ingress("smtp-ingress-intake", {
        "MAILGATE_SMTP_MAX_CONNECTIONS": "3",
        "MAILGATE_SMTP_DATA_BUDGET": "200000",
        "MAILGATE_MAX_MESSAGE_SIZE": "150000",
    })
    service.start()
    yield int(service.env["MAILGATE_SMTP_PORT"])
    service.kill(15)


def _submit(api: httpx.Client, account: str, **body: Any) -> httpx.Response:
    return api.post(f"/v1/account/{account}/submit", json={"to": [{"address": "ok@example.org"}], **body})


def _raw(headers: str, body: str = "hello\r\n") -> str:
    return base64.b64encode((headers + "\r\n" + body).encode("latin-1")).decode()


# --- REST submit: gaps the review found in validation ---------------------------


def test_a_nul_in_a_raw_messages_subject_is_stored_readably_not_a_500(api: httpx.Client, account: str) -> None:
    raw = _raw("From: a@sender.test\r\nTo: ok@example.org\r\nSubject: =?utf-8?b?YQBi?=\r\n"
               "Message-ID: <nul-\x00-id@sender.test>\r\n")
    response = api.post(f"/v1/account/{account}/submit", json={"raw": raw})
    assert response.status_code == 200, response.text
    entry = api.get(f"/v1/outbox/{response.json()['queueId']}").json()
    assert entry["subject"] == "a\ufffdb"
    assert "\x00" not in entry["messageId"] and "\ufffd" in entry["messageId"]


def test_a_raw_message_over_the_size_limit_is_refused_with_413(strict_api: str, stack: Stack,
                                                               account: str) -> None:
    raw = _raw("From: a@sender.test\r\nTo: ok@example.org\r\nSubject: big\r\n", "x" * (SMALL_LIMIT + 10))
    with httpx.Client(base_url=strict_api, headers=stack.auth_headers, timeout=15) as api:
        response = api.post(f"/v1/account/{account}/submit", json={"raw": raw})
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "raw"


def test_a_subject_too_long_for_one_header_line_is_refused(api: httpx.Client, account: str) -> None:
    response = _submit(api, account, subject="x" * 999, text="hi")
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "subject"


def test_attachment_content_that_is_not_base64_is_refused_not_corrupted(api: httpx.Client, account: str) -> None:
    bad = _submit(api, account, text="hi", attachments=[{"filename": "a.bin", "content": "aGVsbG8*!~"}])
    assert bad.status_code == 400, bad.text
    assert bad.json()["field"].startswith("attachments")
    # Base64 wrapped in lines, as MIME writes it, is fine.
    wrapped = base64.encodebytes(b"x" * 200).decode()
    good = _submit(api, account, text="hi", attachments=[{"filename": "a.bin", "content": wrapped}])
    assert good.status_code == 200, good.text


# --- memory bounds ---------------------------------------------------------------


def test_a_request_that_would_overrun_the_body_budget_waits_then_gets_503(strict_api: str, stack: Stack,
                                                                          account: str) -> None:
    host, port = strict_api.removeprefix("http://").split(":")
    # A slow client holds the whole budget: it declares 150 kB and sends them slowly.
    slow = socket.create_connection((host, int(port)))
    try:
        slow.sendall(f"POST /v1/account/{account}/submit HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {stack.admin_token}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 150000\r\n\r\n".encode())
        slow.sendall(b'{"to": [{"address": "ok@example.org"}], "text": "')
        time.sleep(0.5)
        started = time.monotonic()
        with httpx.Client(base_url=strict_api, headers=stack.auth_headers, timeout=30) as api:
            response = _submit(api, account, text="y" * 60_000)
        waited = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert "nothing was stored" in response.json()["message"]
        assert waited >= 5  # it waited for room before giving up
    finally:
        slow.close()
    # Once the slow client is gone, the same request goes through.
    with httpx.Client(base_url=strict_api, headers=stack.auth_headers, timeout=30) as api:
        assert _submit(api, account, text="y" * 60_000).status_code == 200


def _smtp_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_connections_over_the_limit_get_421_and_the_others_keep_working(strict_smtp: int) -> None:
    held = [socket.create_connection(("127.0.0.1", strict_smtp)) for _ in range(3)]
    try:
        for sock in held:
            assert _smtp_line(sock).startswith(b"220")
        extra = socket.create_connection(("127.0.0.1", strict_smtp))
        with extra:
            assert _smtp_line(extra).startswith(b"421 4.3.2")
    finally:
        for sock in held:
            sock.close()
    # Closed sessions free their places.
    wait_for(lambda: _greets(strict_smtp), message="a new connection is greeted again")


def _greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return _smtp_line(sock).startswith(b"220")


def _begin_data(port: int, token: str, account: str, size: int) -> tuple[socket.socket, Any]:
    """An authenticated session that declares ``size`` bytes and sends DATA (reply not read)."""
    sock = socket.create_connection(("127.0.0.1", port))
    file = sock.makefile("rb")

    def command(line: str) -> bytes:
        sock.sendall(line.encode() + b"\r\n")
        reply = b""
        while True:
            got = file.readline()
            reply += got
            if got[3:4] != b"-":
                return reply

    assert file.readline().startswith(b"220")
    assert command("EHLO client.test").startswith(b"250")
    auth = base64.b64encode(f"\0{account}\0{token}".encode()).decode()
    assert command(f"AUTH PLAIN {auth}").startswith(b"235")
    assert command(f"MAIL FROM:<{account}@sender.test> SIZE={size}").startswith(b"250")
    assert command("RCPT TO:<ok@example.org>").startswith(b"250")
    sock.sendall(b"DATA\r\n")
    sock.settimeout(20)
    return sock, file


def test_message_data_beyond_the_data_budget_waits_for_room(strict_smtp: int, stack: Stack, account: str,
                                                            smtp_sink: SmtpSink) -> None:
    token = create_token(stack.database_url, account, ["smtp"])
    first, first_replies = _begin_data(strict_smtp, token, account, 150_000)
    second, second_replies = _begin_data(strict_smtp, token, account, 150_000)
    try:
        assert first_replies.readline().startswith(b"354")
        # 150 kB + 150 kB do not fit in 200 kB: the second waits while the first arrives.
        second.settimeout(1.5)
        with pytest.raises(TimeoutError):
            second.recv(100)
        tag = uuid.uuid4().hex[:8]
        first.sendall(f"Subject: first {tag}\r\n\r\n".encode() + b"x" * 900 + b"\r\n.\r\n")
        assert first_replies.readline().startswith(b"250")
        second.settimeout(20)
        assert second_replies.readline().startswith(b"354")
        second.sendall(f"Subject: second {tag}\r\n\r\nbody\r\n.\r\n".encode())
        assert second_replies.readline().startswith(b"250")
    finally:
        first.close()
        second.close()


def test_an_smtp_client_retrying_after_a_lost_reply_does_not_queue_twice(stack: Stack, account: str,
                                                                         smtp_sink: SmtpSink) -> None:
    """The same envelope and bytes again (the client never saw our 250) get the first queue id."""
    token = create_token(stack.database_url, account, ["smtp"])
    to = f"retry-{uuid.uuid4().hex[:8]}@example.org"
    data = f"From: {account}@sender.test\r\nTo: {to}\r\nSubject: once\r\n\r\nbody\r\n".encode()
    replies = []
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", stack.smtp_port) as smtp:
            smtp.login(account, token)
            smtp.mail(f"{account}@sender.test")
            smtp.rcpt(to)
            replies.append(smtp.data(data))
    assert replies[0] == replies[1], replies
    wait_for(lambda: smtp_sink.to(to), message="the message delivered")
    time.sleep(1)
    assert len(smtp_sink.to(to)) == 1


# --- who may point what where ---------------------------------------------------------


def test_an_accounts_own_webhook_url_is_checked_like_every_webhook_url(strict_api: str, stack: Stack) -> None:
    with httpx.Client(base_url=strict_api, headers=stack.auth_headers, timeout=15) as api:
        response = api.post("/v1/account", json={
            "account": f"acct-{uuid.uuid4().hex[:8]}", "imap": False, "webhooks": "http://127.0.0.1:9/hook",
            "smtp": {"host": "smtp.example.com", "port": 587},
        })
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "webhooks"


def test_account_tokens_may_only_use_public_mail_servers_when_the_operator_says_so(strict_api: str,
                                                                                   stack: Stack,
                                                                                   account: str) -> None:
    token = create_token(stack.database_url, account, ["api"])
    tenant = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=strict_api, timeout=15) as api:
        for host in ("127.0.0.1", "10.0.0.5", "localhost", "[::1]"):
            refused = api.put(f"/v1/account/{account}", headers=tenant,
                              json={"smtp": {"host": host.strip("[]"), "port": 25}})
            assert refused.status_code == 400, (host, refused.text)
            assert refused.json()["field"] == "smtp.host"
        public = api.put(f"/v1/account/{account}", headers=tenant,
                         json={"smtp": {"host": "93.184.215.14", "port": 587}})
        assert public.status_code == 200, public.text
        # The operator (admin token) is trusted with internal relays.
        admin = api.put(f"/v1/account/{account}", headers=stack.auth_headers,
                        json={"smtp": {"host": "127.0.0.1", "port": 2525}})
        assert admin.status_code == 200, admin.text


def test_the_timeline_shows_webhook_urls_to_admins_only(api: httpx.Client, stack: Stack, account: str,
                                                        smtp_sink: SmtpSink,
                                                        webhook_receiver: WebhookReceiver) -> None:
    queued = _submit(api, account, text="hi").json()["queueId"]

    def webhook_steps(headers: dict[str, str]) -> list[dict[str, Any]]:
        body = httpx.get(f"{stack.api_url}/v1/outbox/{queued}/timeline", headers=headers).json()
        return [s for s in body["timeline"] if s["step"] == "webhook"]

    wait_for(lambda: any(s["detail"].get("status") == 200 for s in webhook_steps(stack.auth_headers)),
             message="the messageSent webhook in the timeline")
    assert all("url" in s["detail"] for s in webhook_steps(stack.auth_headers))
    token = create_token(stack.database_url, account, ["api"])
    tenant_view = webhook_steps({"Authorization": f"Bearer {token}"})
    assert tenant_view and all("url" not in s["detail"] for s in tenant_view)
    entry = httpx.get(f"{stack.api_url}/v1/outbox/{queued}", headers={"Authorization": f"Bearer {token}"}).json()
    assert all("url" not in s["detail"] for s in entry["timeline"] if s["step"] == "webhook")


def test_retry_unknown_outcome_is_an_account_setting(api: httpx.Client, account: str) -> None:
    assert "retryUnknownOutcome" not in api.get(f"/v1/account/{account}").json()
    assert api.put(f"/v1/account/{account}", json={"retryUnknownOutcome": True}).status_code == 200
    assert api.get(f"/v1/account/{account}").json()["retryUnknownOutcome"] is True


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["mailgate-api", "mailgate-sender"])
def test_services_refuse_to_start_with_the_public_default_secret(stack: Stack, command: str) -> None:
    env = {k: v for k, v in stack.env.items() if k not in ("MAILGATE_SECRET", "MAILGATE_DEVELOPMENT")}
    env["MAILGATE_API_PORT"] = str(free_port())
    env["MAILGATE_HEALTH_PORT"] = str(free_port())
    result = subprocess.run([str(BIN / command)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MAILGATE_SECRET" in result.stderr
