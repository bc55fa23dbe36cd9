"""Malformed SMTP commands and header blocks must never crash smtp-ingress, never get a
4xx "internal error", and never queue a half message."""

from __future__ import annotations

import base64
import socket
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.support.stack import Stack
from tests.support.tokens import create_token

HOST = "127.0.0.1"
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

line_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
verbs = st.sampled_from([b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP",
                         b"VRFY", b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"BDAT",
                         b"HELP", b"EXPN", b"mail from:<", b"RCPT TO:<"])
# A client that sends STARTTLS must start a TLS handshake next, not pipeline more commands.
command = st.one_of(line_bytes, st.tuples(verbs, line_bytes).map(lambda t: t[0] + b" " + t[1]),
                    st.tuples(verbs, line_bytes).map(lambda t: t[0] + t[1])).filter(
    lambda c: not c.lstrip().upper().startswith(b"STARTTLS"))
header_name = st.one_of(
    st.sampled_from([b"Subject", b"From", b"To", b"Cc", b"Bcc", b"Message-ID", b"Date",
                     b"MIME-Version", b"Content-Type", b"X-EE-Send-At", b"X-EE-Account",
                     b"Content-Transfer-Encoding", b"Received"]),
    st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b":", b"").replace(b"\r", b"")
                                           .replace(b"\n", b"") or b"X"),
)
header_line = st.tuples(header_name, line_bytes, st.booleans()).map(
    lambda t: t[0] + (b": " if t[2] else b":") + t[1])
continuation = line_bytes.map(lambda b: b" " + b)


@pytest.fixture
def credentials(stack: Stack, account: str) -> str:
    token = create_token(stack.database_url, account, ["smtp"])
    return base64.b64encode(f"\0{account}\0{token}".encode()).decode()


def _session(port: int, auth: str) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(f"EHLO fuzz.test\r\nAUTH PLAIN {auth}\r\n".encode())
    return sock


def _read_all(sock: socket.socket) -> list[bytes]:
    """Every reply line until the server closes (after our QUIT)."""
    data = b""
    sock.settimeout(10)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data.split(b"\r\n")


def _outbox_total(api: httpx.Client, account: str) -> int:
    response = api.get("/v1/outbox", params={"state": "all", "account": account})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def _assert_alive(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO alive.test\r\n")
        assert reader.readline().startswith(b"250-")


def _assert_no_internal_error(lines: list[bytes]) -> None:
    for line in lines:
        # 451 4.3.0 is our "internal error"; "Error: (" is aiosmtpd's crash echo.
        assert not line.startswith(b"451"), lines
        assert b"Error: (" not in line, lines


@FUZZ
@given(commands=st.lists(command, min_size=1, max_size=12))
@example(commands=[b"mail from:< "])  # once crashed aiosmtpd's address parser
@example(commands=[b"VRFY :\x80"])  # aiosmtpd could not echo undecodable bytes back
def test_malformed_commands(stack: Stack, api: httpx.Client, account: str, credentials: str,
                            commands: list[bytes]) -> None:
    before = _outbox_total(api, account)
    sock = _session(stack.smtp_port, credentials)
    # The trailing "." ends a DATA the junk may have opened; then QUIT.
    sock.sendall(b"".join(c + b"\r\n" for c in commands) + b"\r\n.\r\nQUIT\r\n")
    lines = _read_all(sock)
    _assert_no_internal_error(lines)
    queued = sum(1 for line in lines if b"Message queued for delivery" in line)
    assert _outbox_total(api, account) == before + queued
    _assert_alive(stack.smtp_port)


@FUZZ
@given(headers=st.lists(st.one_of(header_line, continuation), max_size=12),
       body=st.lists(line_bytes, max_size=5), hang_up=st.booleans())
def test_malformed_headers(stack: Stack, api: httpx.Client, account: str, credentials: str,
                           headers: list[bytes], body: list[bytes], hang_up: bool) -> None:
    before = _outbox_total(api, account)
    sock = _session(stack.smtp_port, credentials)
    to = f"fuzz-{uuid.uuid4().hex[:8]}@example.org"
    sock.sendall(f"MAIL FROM:<{account}@sender.test>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
    # Dot-stuffing as every client does it, so only the final "." ends the message.
    lines = [b"." + line if line.startswith(b".") else line for line in (*headers, b"", *body)]
    message = b"".join(line + b"\r\n" for line in lines)
    if hang_up:
        sock.sendall(message)
        sock.close()
        replies: list[bytes] = []
    else:
        sock.sendall(message + b".\r\nQUIT\r\n")
        replies = _read_all(sock)
        _assert_no_internal_error(replies)
        final = [r for r in replies if r[:1] in (b"2", b"5") and not r.startswith((b"250-", b"235",
                                                                                    b"221"))]
        # After MAIL, RCPT: the DATA answer is either "queued" or a permanent refusal.
        answer = final[-1]
        event(answer[:9].decode("ascii", "replace"))
        assert answer.startswith((b"250 Message queued", b"5")), replies
    _assert_alive(stack.smtp_port)
    queued = sum(1 for line in replies if b"Message queued for delivery" in line)
    assert _outbox_total(api, account) == before + queued
