"""SMTP submission door: real SMTP clients against the running smtp-ingress service.

A message submitted over SMTP must take exactly the REST path afterwards:
the same outbox, the same sender, the same webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import pytest

from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for
from tests.support.tokens import create_token
from tests.support.webhook_receiver import WebhookReceiver

HOST = "127.0.0.1"
QUEUED = re.compile(r"Message queued for delivery as (\w+) \(([^)]+)\)")


def rcpt(prefix: str = "smtp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def insecure_tls() -> ssl.SSLContext:
    # The test stack's certificate is self-signed, like `make run`'s.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def queued_id(reply: bytes | str) -> tuple[str, datetime]:
    text = reply.decode() if isinstance(reply, bytes) else reply
    found = QUEUED.search(text)
    assert found, text
    return found.group(1), datetime.fromisoformat(found.group(2))


def outbox_of(api: httpx.Client, account: str) -> list[dict[str, Any]]:
    response = api.get("/v1/outbox", params={"state": "all", "account": account})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


class ProxySMTP(smtplib.SMTP):
    """smtplib that opens with a PROXY protocol v1 header, as HAProxy would."""

    def __init__(self, *args: Any, client_ip: str = "203.0.113.7", **kw: Any) -> None:
        self.client_ip = client_ip
        super().__init__(*args, **kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout)
        sock.sendall(f"PROXY TCP4 {self.client_ip} 127.0.0.1 40000 {port}\r\n".encode())
        return sock


@pytest.fixture
def token(stack: Stack, account: str) -> str:
    return create_token(stack.database_url, account, ["smtp"])


@pytest.fixture(scope="module")
def edge_port(stack: Stack) -> Iterator[int]:
    """A second ingress as it would run behind a load balancer on a trusted network:
    PROXY protocol on, no AUTH required (X-EE-Account picks the account), 200 kB limit."""
    service = stack.add_smtp_ingress("smtp-ingress-edge", {
        "MAILGATE_SMTP_AUTH": "false",
        "MAILGATE_SMTP_PROXY_PROTOCOL": "true",
        "MAILGATE_MAX_MESSAGE_SIZE": "200000",
    })
    service.start()
    yield int(service.env["MAILGATE_SMTP_PORT"])
    service.kill(15)


def rich_message(account: str, to: str, cc: str, bcc: str, send_at: datetime) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address("Jürgen Müller", addr_spec=f"{account}@sender.test")
    msg["To"] = Address("Zoë Ångström", addr_spec=to)
    msg["Cc"] = cc
    msg["Bcc"] = bcc
    msg["Subject"] = "Grüße über SMTP ✓"
    msg["X-EE-Send-At"] = send_at.isoformat()
    msg.set_content("Hallo — ünïcödé body\n")
    msg.add_alternative("<p>Hallo <b>SMTP</b></p>", subtype="html")
    msg.add_attachment(bytes(range(256)) * 20, maintype="application", subtype="octet-stream",
                       filename="data.bin")
    msg.add_attachment("Straße;1\n", subtype="csv", filename="tabelle.csv")
    return msg


def test_ehlo_advertises_extensions(stack: Stack) -> None:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
        features = client.esmtp_features
        assert features["size"] == str(25 * 1024 * 1024)
        for name in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "starttls"):
            assert name in features, features
        assert features["auth"].split() == ["PLAIN", "LOGIN"]
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        assert "starttls" not in client.esmtp_features
        assert "auth" in client.esmtp_features


def test_smtplib_starttls_auth_plain_rich_message_is_delivered_like_rest(
    stack: Stack, api: httpx.Client, account: str, token: str, smtp_sink: SmtpSink,
    webhook_receiver: WebhookReceiver,
) -> None:
    to, cc, bcc = rcpt("to"), rcpt("cc"), rcpt("bcc")
    extra = [rcpt(f"many{i}") for i in range(40)]
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    msg = rich_message(account, to, cc, bcc, send_at)
    sender = f"bounces+{account}@sender.test"
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=15) as client:
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        client.user, client.password = account, token
        code, reply = client.auth("PLAIN", client.auth_plain)
        assert (code, reply) == (235, b"2.7.0 Authentication successful")
        assert client.mail(sender)[0] == 250
        for address in [to, cc, bcc, *extra]:
            assert client.rcpt(address) == (250, b"2.1.5 Recipient OK")
        code, reply = client.data(msg.as_bytes())
    assert code == 250, reply
    queue_id, scheduled = queued_id(reply)
    assert abs((scheduled - send_at).total_seconds()) < 0.01

    entry = api.get(f"/v1/outbox/{queue_id}").json()
    assert entry["source"] == "smtp" and entry["state"] == "queued"
    assert entry["envelope"] == {"from": sender, "to": [to, cc, bcc, *extra]}
    assert smtp_sink.to(to) == []  # scheduled, not yet due

    [received] = wait_for(lambda: smtp_sink.to(to), timeout=15, message="delivery to the sink")
    assert received.at >= send_at.timestamp()
    assert received.mail_from == sender
    assert sorted(received.rcpt_tos) == sorted([to, cc, bcc, *extra])
    got = received.message
    assert got["Subject"] == "Grüße über SMTP ✓"
    assert got["From"].addresses[0].display_name == "Jürgen Müller"
    assert got["To"].addresses[0].display_name == "Zoë Ångström"
    assert got["Bcc"] is None and bcc not in received.data.decode("ascii", "replace")
    assert got["X-EE-Send-At"] is None
    assert got["Message-ID"] and got["Date"] and got["MIME-Version"] == "1.0"
    assert got.get_body(("plain",)).get_content().strip() == "Hallo — ünïcödé body"
    files = {p.get_filename(): p.get_content() for p in got.walk() if p.get_filename()}
    assert files["data.bin"] == bytes(range(256)) * 20
    assert files["tabelle.csv"].strip() == "Straße;1"

    [hook] = wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id),
                      message="messageSent webhook")
    assert hook.json["account"] == account
    assert hook.json["data"]["messageId"] == got["Message-ID"]
    assert api.get(f"/v1/outbox/{queue_id}").json()["state"] == "sent"


def test_smtplib_auth_login_with_shared_smtp_password(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    password = "shared-" + uuid.uuid4().hex
    assert api.post("/v1/settings", json={"smtpServerPassword": password}).status_code == 200
    # Write-only: never read back, not even hashed.
    assert "smtpServerPassword" not in api.get("/v1/settings").json()
    to = rcpt("login")
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        client.user, client.password = account, password
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        client.mail(f"{account}@sender.test")
        client.rcpt(to)
        # No Message-ID, Date or MIME-Version: the ingress adds them.
        code, reply = client.data(b"From: a@sender.test\r\nTo: x@example.org\r\nSubject: bare\r\n\r\nhi\r\n")
        assert code == 250, reply
        client.mail(f"{account}@sender.test")
        client.rcpt(rcpt("badsendat"))
        code, reply = client.data(b"Subject: when?\r\nX-EE-Send-At: next tuesday\r\n\r\nhi\r\n")
        assert (code, reply[:5]) == (554, b"5.6.0"), reply
    [received] = wait_for(lambda: smtp_sink.to(to), message="delivery")
    got = received.message
    assert got["Message-ID"] and got["Date"] and got["MIME-Version"] == "1.0"
    assert got["Subject"] == "bare"


async def test_aiosmtplib_client(stack: Stack, account: str, token: str, smtp_sink: SmtpSink) -> None:
    to = rcpt("aio")
    msg = EmailMessage()
    msg["From"] = f"{account}@sender.test"
    msg["To"] = to
    msg["Subject"] = "über aiosmtplib"
    msg.set_content("async body")
    client = aiosmtplib.SMTP(hostname=HOST, port=stack.smtp_port, start_tls=True,
                             tls_context=insecure_tls(), timeout=10)
    async with client:
        await client.login(account, token)
        errors, reply = await client.send_message(msg)
    assert errors == {}
    queue_id, _ = queued_id(reply)
    for _ in range(150):
        if smtp_sink.to(to):
            break
        await asyncio.sleep(0.1)
    [received] = smtp_sink.to(to)
    assert received.message["Subject"] == "über aiosmtplib"
    assert queue_id


def test_swaks_tls_auth_plain(
    stack: Stack, account: str, token: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver
) -> None:
    to = rcpt("swaks")
    result = subprocess.run(
        ["swaks", "--server", f"{HOST}:{stack.smtp_port}", "--tls", "--auth", "PLAIN",
         "--auth-user", account, "--auth-password", token,
         "--from", f"{account}@sender.test", "--to", to,
         "--header", "Subject: sent with swaks", "--body", "swaks body"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<~  250 Message queued for delivery as" in result.stdout
    queue_id, _ = queued_id(result.stdout)
    [received] = wait_for(lambda: smtp_sink.to(to), message="swaks delivery")
    assert received.message["Subject"] == "sent with swaks"
    wait_for(lambda: webhook_receiver.received("messageSent", queueId=queue_id),
             message="messageSent webhook for swaks")


def test_wrong_credentials_get_535_and_are_slowed_down(
    stack: Stack, api: httpx.Client, account: str, token: str
) -> None:
    other_account = f"acct-{uuid.uuid4().hex[:10]}"
    created = api.post("/v1/account", json={
        "account": other_account, "imap": False,
        "smtp": {"host": "127.0.0.1", "port": 25, "secure": False}})
    assert created.status_code == 200, created.text
    other = create_token(stack.database_url, other_account, ["smtp"])
    api_only = create_token(stack.database_url, account, ["api"])
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as client:
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        took = []
        for password in ("wrong", other, api_only):
            started = time.monotonic()
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.user, client.password = account, password
                client.auth("PLAIN", client.auth_plain)
            took.append(time.monotonic() - started)
            assert failed.value.smtp_code == 535
            assert failed.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        # The third guess waited for the two failures before it.
        assert took[2] >= 0.35 and took[2] > took[0], took
        # Unknown account, even with a valid admin token: same answer, nothing revealed.
        client.user, client.password = "no-such-account", stack.admin_token
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
        client.user, client.password = account, token
        assert client.auth("PLAIN", client.auth_plain)[0] == 235


def test_mail_without_auth_and_bad_addresses_are_refused(stack: Stack, account: str, token: str) -> None:
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("a@sender.test") == (530, b"5.7.0 Authentication required")
        client.user, client.password = account, token
        client.auth("PLAIN", client.auth_plain)
        code, reply = client.mail("not-an-address")
        assert code == 501 and reply.startswith(b"5.1.3"), reply
        assert client.mail(f"{account}@sender.test")[0] == 250
        code, reply = client.rcpt("<a@b@c>")
        assert code == 501 and reply.startswith(b"5.1.3"), reply
        code, reply = client.rcpt("user@nodomain")
        assert code == 501 and reply.startswith(b"5.1.3"), reply
        code, reply = client.docmd("MAIL", "FROM:<x@sender.test> SIZE=999999999999")
        assert code == 503  # nested MAIL: the envelope is still open
        client.rset()
        code, reply = client.docmd("MAIL", "FROM:<x@sender.test> SIZE=999999999999")
        assert (code, reply[:5]) == (552, b"5.3.4"), reply


def test_dropped_connection_mid_data_queues_nothing(
    stack: Stack, api: httpx.Client, account: str, token: str
) -> None:
    auth = base64.b64encode(f"\0{account}\0{token}".encode()).decode()
    with socket.create_connection((HOST, stack.smtp_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(b"EHLO client.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        for command, expect in ((f"AUTH PLAIN {auth}", b"235"),
                                (f"MAIL FROM:<{account}@sender.test>", b"250"),
                                (f"RCPT TO:<{rcpt('drop')}>", b"250"), ("DATA", b"354")):
            sock.sendall(command.encode() + b"\r\n")
            assert reader.readline().startswith(expect)
        sock.sendall(b"Subject: half\r\n\r\nthe first half of a message\r\n")
    time.sleep(1.0)
    assert outbox_of(api, account) == []


def test_pipelined_commands(stack: Stack, api: httpx.Client, account: str, token: str,
                            smtp_sink: SmtpSink) -> None:
    to1, to2 = rcpt("pipe1"), rcpt("pipe2")
    auth = base64.b64encode(f"\0{account}\0{token}".encode()).decode()
    with socket.create_connection((HOST, stack.smtp_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        sock.sendall(f"AUTH PLAIN {auth}\r\n".encode())
        assert reader.readline().startswith(b"235")
        # One write for the whole envelope, then one for the message and QUIT (RFC 2920).
        sock.sendall(f"MAIL FROM:<{account}@sender.test>\r\nRCPT TO:<{to1}>\r\n"
                     f"RCPT TO:<{to2}>\r\nDATA\r\n".encode())
        replies = [reader.readline() for _ in range(4)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"], replies
        sock.sendall(b"Subject: pipelined\r\n\r\n..dot-stuffed line\r\n.\r\nQUIT\r\n")
        queued_reply, bye = reader.readline(), reader.readline()
    queue_id, _ = queued_id(queued_reply)
    assert bye.startswith(b"221")
    [received] = wait_for(lambda: smtp_sink.to(to1), message="pipelined delivery")
    assert sorted(received.rcpt_tos) == sorted([to1, to2])
    assert b"\r\n.dot-stuffed line" in received.data
    assert [m["queueId"] for m in outbox_of(api, account)] == [queue_id]


def test_no_auth_mode_uses_x_ee_account_behind_proxy(
    stack: Stack, edge_port: int, api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    to = rcpt("edge")
    with ProxySMTP(HOST, edge_port, timeout=10) as client:
        client.ehlo("client.test")
        # The real client (from the PROXY header) is not loopback and TLS is not up yet.
        assert "auth" not in client.esmtp_features
        assert client.docmd("AUTH", "PLAIN") == (
            538, b"5.7.11 Encryption required for requested authentication mechanism")
        client.mail(f"{account}@sender.test")
        client.rcpt(to)
        code, reply = client.data(
            f"X-EE-Account: {account}\r\nSubject: edge\r\n\r\nbody\r\n".encode())
        assert code == 250, reply
        client.mail(f"{account}@sender.test")
        client.rcpt(rcpt("edge-noacct"))
        code, reply = client.data(b"Subject: no account\r\n\r\nbody\r\n")
        assert (code, reply[:5]) == (550, b"5.7.1"), reply
        client.mail(f"{account}@sender.test")
        client.rcpt(rcpt("edge-unknown"))
        code, reply = client.data(b"X-EE-Account: nobody-here\r\nSubject: x\r\n\r\nbody\r\n")
        assert (code, reply[:5]) == (550, b"5.7.1"), reply
        client.mail(f"{account}@sender.test")
        client.rcpt(rcpt("edge-big"))
        code, reply = client.data(b"X-EE-Account: " + account.encode() + b"\r\n\r\n"
                                  + (b"x" * 998 + b"\r\n") * 250)
        assert (code, reply[:5]) == (552, b"5.3.4"), reply
    [received] = wait_for(lambda: smtp_sink.to(to), message="no-auth delivery")
    assert received.message["X-EE-Account"] is None
    assert len(outbox_of(api, account)) == 1


def test_edge_without_proxy_header_is_dropped(edge_port: int) -> None:
    with socket.create_connection((HOST, edge_port), timeout=15) as sock:
        sock.sendall(b"EHLO not-a-proxy-header\r\n")
        assert sock.recv(100) == b""  # closed before any greeting
    with ProxySMTP(HOST, edge_port, timeout=10) as client:
        client.starttls(context=insecure_tls())
        client.ehlo("client.test")
        assert "auth" in client.esmtp_features  # over TLS AUTH is offered again


def test_database_outage_is_451_never_250(stack: Stack, account: str) -> None:
    """An ingress whose database is unreachable must tell clients to retry later."""
    service = stack.add_smtp_ingress("smtp-ingress-nodb", {
        "MAILGATE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        "MAILGATE_SMTP_AUTH": "false",
    })
    service.start(wait=False)  # never "ready": that is the point
    port = int(service.env["MAILGATE_SMTP_PORT"])

    def listening() -> bool:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, timeout=20, message="smtp-ingress-nodb listening")
        with smtplib.SMTP(HOST, port, timeout=20) as client:
            client.ehlo("client.test")
            client.user, client.password = account, "whatever"
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.auth("PLAIN", client.auth_plain)
            assert failed.value.smtp_code == 454
            assert client.mail(f"{account}@sender.test")[0] == 250
            code, reply = client.rcpt(rcpt("nodb"))  # the suppression list is in the database
        assert (code, reply[:5]) == (451, b"4.3.0"), reply
    finally:
        service.kill(15)


def test_suppressed_recipient_is_refused_at_rcpt(
    stack: Stack, api: httpx.Client, edge_port: int, account: str, token: str, smtp_sink: SmtpSink
) -> None:
    dead, alive = rcpt("dead"), rcpt("alive")
    api.post(f"/v1/account/{account}/suppressions",
             json={"address": dead, "reason": "hard bounce"}).raise_for_status()
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=10) as client:
        client.ehlo("client.test")
        client.user, client.password = account, token
        client.auth("PLAIN", client.auth_plain)
        client.mail(f"{account}@sender.test")
        assert client.rcpt(dead) == (550, f"5.7.1 <{dead}> is on the suppression list".encode())
        assert client.rcpt(alive)[0] == 250
        assert client.data(b"Subject: s\r\n\r\nx\r\n")[0] == 250
    # Without AUTH the account is known only at DATA: its suppressed recipients are dropped.
    alive2 = rcpt("alive2")
    with ProxySMTP(HOST, edge_port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail(f"{account}@sender.test")
        client.rcpt(dead)
        client.rcpt(alive2)
        assert client.data(f"X-EE-Account: {account}\r\n\r\nx\r\n".encode())[0] == 250
    [received] = wait_for(lambda: smtp_sink.to(alive2), message="delivery to the unsuppressed")
    assert received.rcpt_tos == [alive2]
    assert smtp_sink.to(dead) == []


def test_two_ingress_processes_share_a_port_only_when_asked(
    stack: Stack, account: str, smtp_sink: SmtpSink
) -> None:
    env = {"MAILGATE_SMTP_AUTH": "false", "MAILGATE_SMTP_REUSE_PORT": "true"}
    first = stack.add_smtp_ingress("smtp-ingress-shared-1", env)
    port = first.env["MAILGATE_SMTP_PORT"]
    second = stack.add_smtp_ingress("smtp-ingress-shared-2", {**env, "MAILGATE_SMTP_PORT": port})
    # Without the setting a second copy on the same port must fail to start, not share it silently.
    stray = stack.add_smtp_ingress("smtp-ingress-stray", {"MAILGATE_SMTP_AUTH": "false",
                                                          "MAILGATE_SMTP_PORT": port})
    try:
        first.start()
        second.start()
        stray.start(wait=False)
        assert stray.proc is not None and stray.proc.wait(timeout=30) != 0
        recipients = [rcpt("shared") for _ in range(20)]
        for to in recipients:  # a connection each: the kernel spreads them over both processes
            with smtplib.SMTP(HOST, int(port), timeout=15) as client:
                client.sendmail(f"{account}@sender.test", [to],
                                f"X-EE-Account: {account}\r\nSubject: shared\r\n\r\nbody\r\n".encode())
        for to in recipients:
            wait_for(lambda to=to: smtp_sink.to(to), message=f"delivery to {to}")
        # Both took messages (all 20 on one process: odds of one in half a million).
        assert "queued" in first.log_tail(200) and "queued" in second.log_tail(200)
    finally:
        for service in (first, second, stray):
            service.kill(15)
