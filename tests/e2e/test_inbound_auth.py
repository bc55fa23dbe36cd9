"""SPF, DKIM and DMARC through the MX door: a sender publishes its zone in the test DNS server,
sends over SMTP, and the route's webhook and the stored copy carry the verdicts."""

from __future__ import annotations

import base64
import json
import smtplib
import uuid
from collections.abc import Callable
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgate_common.inbound.auth import parse_header
from tests.support.dns_server import DnsServer
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver

AUTHSERV_ID = "mx.mailgate.test"  # the stack's MAILGATE_MX_HOSTNAME


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.fixture
def inbox(stack: Stack, endpoints: Callable[..., dict[str, Any]], routes: Callable[..., dict[str, Any]],
          webhook_receiver: WebhookReceiver) -> str:
    """A route taking support@<a fresh domain> to a webhook; the address."""
    address = f"support@in-{uuid.uuid4().hex[:8]}.example.com"
    hook = endpoints(webhook_receiver.url)
    routes(name="Support", match={"recipient": address},
           actions=[{"type": "webhook", "endpoints": [hook["id"]], "payload": "json"}])
    stack.wait_routed(address)
    return address


def send(stack: Stack, raw: bytes, *, mail_from: str, rcpt: str, helo: str = "client.example.net") -> None:
    with smtplib.SMTP("127.0.0.1", stack.mx_port, local_hostname=helo, timeout=30) as smtp:
        smtp.sendmail(mail_from, [rcpt], raw)


def delivered(webhook_receiver: WebhookReceiver, message_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for hook in webhook_receiver.received("inboundMessage"):
            data: dict[str, Any] = hook.json["data"]
            if data.get("messageId") == message_id:
                return data
        return None
    found: dict[str, Any] = wait_for(find, timeout=20, message=f"inboundMessage for {message_id}")
    return found


def stored(stack: Stack, message_id: str) -> tuple[bytes, dict[str, Any]]:
    row = stack.rows("SELECT raw, auth FROM inbound_messages WHERE message_id = $1", message_id)[0]
    auth = row["auth"]
    return bytes(row["raw"]), json.loads(auth) if isinstance(auth, str) else dict(auth)


def top_authentication_results(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")
    for line in unfolded.split("\r\n"):
        if line.lower().startswith("authentication-results:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Authentication-Results field")


def test_signed_mail_from_a_published_domain_passes(
        stack: Stack, dns_server: DnsServer, webhook_receiver: WebhookReceiver, inbox: str,
        key: tuple[bytes, str]) -> None:
    sender = f"shop-{uuid.uuid4().hex[:8]}.test"
    dns_server.add(sender, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns_server.add(f"sel._domainkey.{sender}", "TXT", key[1])
    dns_server.add(f"_dmarc.{sender}", "TXT", "v=DMARC1; p=reject")
    message_id = f"<{uuid.uuid4().hex}@{sender}>"
    raw = (f"From: Shop <orders@{sender}>\r\nTo: {inbox}\r\nSubject: Order 42\r\nMessage-ID: {message_id}\r\n"
           f"\r\nYour order shipped.\r\n").encode()
    raw = dkim.sign(raw, b"sel", sender.encode(), key[0], include_headers=[b"from", b"to", b"subject"]) + raw
    send(stack, raw, mail_from=f"bounces@{sender}", rcpt=inbox)

    data = delivered(webhook_receiver, message_id)
    auth = data["auth"]
    assert data["spam"] == {"checked": False}  # the test stack has no rspamd
    assert auth["spf"]["result"] == "pass" and auth["spf"]["domain"] == sender
    assert auth["dkim"] == [{"result": "pass", "domain": sender, "selector": "sel", "aligned": True}]
    assert auth["dmarc"] == {"result": "pass", "policy": "reject", "fromDomain": sender}

    raw_stored, auth_stored = stored(stack, message_id)
    assert auth_stored == auth
    header = parse_header(top_authentication_results(raw_stored))
    assert header.authserv_id == AUTHSERV_ID
    assert [(item.method, item.result) for item in header.results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")]


def test_spoofed_from_fails_dmarc_with_the_domains_policy(
        stack: Stack, dns_server: DnsServer, webhook_receiver: WebhookReceiver, inbox: str) -> None:
    bank = f"bank-{uuid.uuid4().hex[:8]}.test"
    dns_server.add(bank, "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add(f"_dmarc.{bank}", "TXT", "v=DMARC1; p=reject")
    message_id = f"<{uuid.uuid4().hex}@spoof.example.net>"
    raw = (f"From: Security <security@{bank}>\r\nTo: {inbox}\r\nSubject: Verify your account\r\n"
           f"Message-ID: {message_id}\r\n\r\nClick here.\r\n").encode()
    send(stack, raw, mail_from=f"security@{bank}", rcpt=inbox)

    auth = delivered(webhook_receiver, message_id)["auth"]
    assert auth["spf"]["result"] == "fail"
    assert auth["dkim"] == []
    assert auth["dmarc"] == {"result": "fail", "policy": "reject", "fromDomain": bank}
    assert "dmarc=fail" in auth["authenticationResults"]
