"""The MX door with real clients (smtplib, swaks): routes decide at RCPT, messages are committed
before 250 and reach their routes' webhook endpoints, synchronous routes answer for the app."""

from __future__ import annotations

import base64
import json
import random
import smtplib
import socket
import subprocess
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.dns_server import DnsServer
from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import Reply, WebhookReceiver

MX_HOSTNAME = "mx.mailgate.test"


def _source() -> tuple[str, int]:
    # Every connection from its own loopback address: the per-IP limit of one test never
    # meets another's (Linux routes all of 127/8 to lo).
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}", 0


def connect(stack: Stack, source: tuple[str, int] | None = None) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", stack.mx_port, timeout=15, source_address=source or _source())
    client.ehlo("client.example.net")
    return client


def message(to: str, *, sender: str = "alice@sender.example.net", subject: str = "Hello",
            body: str = "Hello there.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@sender.example.net>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def deliver(stack: Stack, rcpts: list[str], raw: bytes, *, mail_from: str = "alice@sender.example.net",
            options: tuple[str, ...] = ()) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """(each RCPT's reply, DATA's reply or None when no recipient was accepted)."""
    with connect(stack) as client:
        code, reply = client.mail(mail_from, list(options))
        assert code == 250, reply
        answers = [client.rcpt(r) for r in rcpts]
        if not any(code == 250 for code, _ in answers):
            return answers, None
        return answers, client.data(raw)


def queued_id(reply: tuple[int, bytes] | None) -> str:
    assert reply is not None and reply[0] == 250, reply
    return reply[1].decode().rsplit(" ", 1)[1]


@pytest.fixture
def domain() -> str:
    return f"in-{uuid.uuid4().hex[:8]}.example.com"


def inbound(receiver: WebhookReceiver, message_id: str) -> list[dict[str, Any]]:
    return [hook.json for hook in receiver.received("inboundMessage") if hook.json["data"].get("id") == message_id]


def stored(stack: Stack, message_id: str) -> dict[str, Any] | None:
    """The inbound_messages row, its jsonb columns decoded."""
    rows = stack.rows("SELECT * FROM inbound_messages WHERE id = $1", message_id)
    if not rows:
        return None
    row = dict(rows[0])
    for column in ("auth", "spam", "deliveries"):
        row[column] = json.loads(row[column])
    return row


def test_the_door_offers_starttls_and_no_auth(stack: Stack) -> None:
    with connect(stack) as client:
        code, banner = client.ehlo("client.example.net")
        assert code == 250 and banner.decode().splitlines()[0] == MX_HOSTNAME
        assert client.has_extn("starttls") and client.has_extn("size")
        assert not client.has_extn("auth")
        code, reply = client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")
        assert code == 503, reply


def test_unknown_recipient_is_refused_at_rcpt_and_nothing_is_stored(stack: Stack, domain: str) -> None:
    nobody = f"nobody@{domain}"
    answers, data = deliver(stack, [nobody], message(nobody))
    assert answers[0][0] == 550 and answers[0][1].decode().startswith(f"5.1.1 <{nobody}>: no such recipient")
    assert data is None
    assert stack.rows("SELECT count(*) AS n FROM inbound_messages WHERE $1 = ANY(rcpt_to)", nobody)[0]["n"] == 0


def test_plus_tag_routes_with_its_tag_and_the_stored_copy_has_trace_fields(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]],
        receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]]) -> None:
    app = receivers()
    endpoint = endpoints(app.url)
    route = routes(match={"recipient": f"support@{domain}"},
                   actions=[{"type": "webhook", "endpoints": [endpoint["id"]]}])
    address = f"support+1234@{domain}"
    stack.wait_routed(address)
    answers, data = deliver(stack, [address, f"stranger@{domain}"], message(address, subject="Ticket"))
    assert answers[0][0] == 250 and answers[1][0] == 550
    message_id = queued_id(data)
    row = stored(stack, message_id)
    assert row is not None and row["rcpt_to"] == [address] and row["remote_ip"].startswith("127.")
    assert row["raw"].startswith(f"Authentication-Results: {MX_HOSTNAME};".encode())
    assert f"by {MX_HOSTNAME} (mailgate)".encode() in row["raw"]
    assert row["deliveries"][0]["route"] == route["id"] and row["deliveries"][0]["tag"] == "1234"
    wait_for(lambda: inbound(app, message_id), message="the inboundMessage webhook")
    data_ = inbound(app, message_id)[0]["data"]
    assert data_["recipient"]["tag"] == "1234" and data_["subject"] == "Ticket"
    assert data_["route"]["id"] == route["id"]


def test_a_route_with_two_endpoints_delivers_to_both(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]],
        receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]]) -> None:
    first, second = receivers(), receivers()
    ids = [endpoints(first.url)["id"], endpoints(second.url)["id"]]
    routes(match={"domain": domain}, actions=[{"type": "webhook", "endpoints": ids}])
    address = f"anyone@{domain}"
    stack.wait_routed(address)
    _, data = deliver(stack, [address], message(address))
    message_id = queued_id(data)
    wait_for(lambda: inbound(first, message_id) and inbound(second, message_id), message="both endpoints")


@pytest.mark.parametrize(("status", "text", "expected"), [
    (550, "No such ticket", (550, "5.7.1 No such ticket")),
    (451, "Busy", (451, "4.3.0 Busy")),
])
def test_a_synchronous_route_turns_the_apps_refusal_into_the_smtp_reply(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]],
        receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]],
        status: int, text: str, expected: tuple[int, str]) -> None:
    app = receivers()
    app.answer_always(Reply(status, text.encode(), {"content-type": "text/plain"}))
    endpoint = endpoints(app.url)
    routes(match={"domain": domain}, actions=[{"type": "webhook", "endpoints": [endpoint["id"]], "sync": True}])
    address = f"tickets@{domain}"
    stack.wait_routed(address)
    _, data = deliver(stack, [address], message(address))
    assert data is not None and (data[0], data[1].decode()) == expected
    assert len(app.hooks) == 1 and app.hooks[0].json["event"] == "inboundMessage"
    assert "webhook-signature" in app.hooks[0].headers and "x-ee-wh-signature" in app.hooks[0].headers
    assert stack.rows("SELECT count(*) AS n FROM inbound_messages WHERE $1 = ANY(rcpt_to)", address)[0]["n"] == 0


def test_a_synchronous_route_answered_2xx_is_delivered_once(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]],
        receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]]) -> None:
    sync_app, async_app = receivers(), receivers()
    sync_id, async_id = endpoints(sync_app.url)["id"], endpoints(async_app.url)["id"]
    routes(match={"domain": domain}, actions=[{"type": "webhook", "endpoints": [sync_id], "sync": True},
                                              {"type": "webhook", "endpoints": [async_id]}])
    address = f"orders@{domain}"
    stack.wait_routed(address)
    _, data = deliver(stack, [address], message(address))
    message_id = queued_id(data)
    assert len(inbound(sync_app, message_id)) == 1
    # The asynchronous endpoint's event is the same event: once it arrived, nothing else is coming.
    wait_for(lambda: inbound(async_app, message_id), message="the asynchronous endpoint")
    event_id = inbound(sync_app, message_id)[0]["eventId"]
    assert inbound(async_app, message_id)[0]["eventId"] == event_id
    assert len(inbound(sync_app, message_id)) == 1
    log = stack.rows("SELECT endpoint_id, state FROM webhook_deliveries WHERE event_id = $1 ORDER BY id", event_id)
    assert {(r["endpoint_id"], r["state"]) for r in log} >= {(sync_id, "delivered")}
    assert [r["endpoint_id"] for r in log].count(sync_id) == 1


def test_declared_size_over_the_routes_limit_is_refused_at_rcpt(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    routes(match={"domain": domain}, actions=[{"type": "hold"}], maxSize=2000)
    address = f"small@{domain}"
    stack.wait_routed(address)
    answers, _ = deliver(stack, [address], message(address), options=("SIZE=5000",))
    assert answers[0][0] == 552 and answers[0][1].startswith(b"5.3.4")
    # Undeclared: the limit holds at DATA too.
    _, data = deliver(stack, [address], message(address, body="x" * 3000 + "\n"))
    assert data is not None and data[0] == 552


def test_rate_limits_answer_4xx(stack: Stack) -> None:
    # A door of its own with small limits: the stack's door keeps its defaults for the other tests.
    port = free_port()
    door = stack.add_smtp_ingress("smtp-ingress-mx-limits", {
        "MAILGATE_MX_HOST": "127.0.0.1", "MAILGATE_MX_PORT": str(port), "MAILGATE_MX_HOSTNAME": MX_HOSTNAME,
        "MAILGATE_MX_RATE_PER_IP": "5", "MAILGATE_MX_RATE_PER_SENDER": "2",
    })
    try:
        door.start()
        with smtplib.SMTP("127.0.0.1", port, timeout=15, source_address=_source()) as client:
            client.ehlo("client.example.net")
            codes = []
            for sender in ("a@sender.example.net", "a@sender.example.net", "A@sender.example.net",
                           "b@sender.example.net", "", "", "c@sender.example.net"):
                codes.append(client.mail(sender))
                client.rset()
        # Per sender (case-insensitive): 2 a minute; per address: 5 attempts, the null sender's too.
        assert [code for code, _ in codes] == [250, 250, 450, 250, 250, 450, 450], codes
        assert codes[2][1].startswith(b"4.7.1 Too many messages from <A@sender.example.net>")
        assert codes[5][1].startswith(b"4.7.1 Too many messages from 127.")
    finally:
        stack.services.pop("smtp-ingress-mx-limits").kill(15)


def test_null_sender_is_taken_and_flagged_as_a_bounce(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    routes(match={"domain": domain}, actions=[{"type": "hold"}])
    address = f"bounces@{domain}"
    stack.wait_routed(address)
    _, data = deliver(stack, [address], message(address, sender="MAILER-DAEMON@sender.example.net"),
                      mail_from="")
    row = stored(stack, queued_id(data))
    assert row is not None and row["mail_from"] == "" and row["automated"] == "bounce" and row["held"] is True


def test_dkim_signed_message_reaches_the_webhook_with_dkim_pass(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]], dns_server: DnsServer,
        receivers: Callable[..., WebhookReceiver], endpoints: Callable[..., dict[str, Any]]) -> None:
    signer = f"signer-{uuid.uuid4().hex[:6]}.example.org"
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    dns_server.add(f"mx1._domainkey.{signer}", "TXT", f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")
    app = receivers()
    routes(match={"domain": domain}, actions=[{"type": "webhook", "endpoints": [endpoints(app.url)["id"]]}])
    address = f"signed@{domain}"
    stack.wait_routed(address)
    raw = message(address, sender=f"bob@{signer}")
    signed = dkim.sign(raw, b"mx1", signer.encode(), pem, include_headers=[b"from", b"to", b"subject"]) + raw
    _, data = deliver(stack, [address], signed, mail_from=f"bob@{signer}")
    message_id = queued_id(data)
    wait_for(lambda: inbound(app, message_id), message="the inboundMessage webhook")
    auth = inbound(app, message_id)[0]["data"]["auth"]
    assert [(d["result"], d["domain"]) for d in auth["dkim"]] == [("pass", signer)]
    row = stored(stack, message_id)
    assert row is not None
    header = row["raw"].split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    assert f"header.d={signer}".encode() in header and b"dkim=pass" in header


def test_swaks_delivers_over_starttls(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    routes(match={"recipient": f"desk@{domain}"}, actions=[{"type": "hold"}])
    address = f"desk@{domain}"
    stack.wait_routed(address)
    done = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(stack.mx_port), "--ehlo", "client.example.net",
         "--tls", "--from", "carol@sender.example.net", "--to", address, "--header", "Subject: via swaks",
         "--body", "Sent with swaks."], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    message_id = done.stdout.split("queued as ")[1].split()[0]
    row = stored(stack, message_id)
    assert row is not None and row["subject"] == "via swaks" and row["tls"] and row["tls"].startswith("TLS")


def test_database_failure_at_commit_answers_451_and_stores_nothing(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    # A door whose database role may read the routes but not store messages: the commit fails
    # after every check passed, as it would with PostgreSQL going away at that moment.
    role = f"mx_ro_{uuid.uuid4().hex[:8]}"
    stack.rows(f'CREATE ROLE "{role}" LOGIN')
    stack.rows(f'GRANT SELECT ON inbound_routes, webhook_endpoints TO "{role}"')
    port = free_port()
    door = stack.add_smtp_ingress("smtp-ingress-mx-ro", {
        "MAILGATE_DATABASE_URL": stack.database_url.replace("postgres@", f"{role}@"),
        "MAILGATE_MX_HOST": "127.0.0.1", "MAILGATE_MX_PORT": str(port), "MAILGATE_MX_HOSTNAME": MX_HOSTNAME,
    })
    routes(match={"domain": domain}, actions=[{"type": "hold"}])
    address = f"outage@{domain}"
    try:
        door.start()
        with smtplib.SMTP("127.0.0.1", port, timeout=15, source_address=_source()) as client:
            client.ehlo("client.example.net")
            client.mail("alice@sender.example.net")
            assert client.rcpt(address)[0] == 250
            code, reply = client.data(message(address))
        assert (code, reply[:5]) == (451, b"4.3.0"), reply
        assert stack.rows("SELECT count(*) AS n FROM inbound_messages WHERE $1 = ANY(rcpt_to)", address)[0]["n"] == 0
    finally:
        stack.services.pop("smtp-ingress-mx-ro").kill(15)
        stack.rows(f'DROP OWNED BY "{role}"')
        stack.rows(f'DROP ROLE "{role}"')


def test_a_route_rejecting_at_data_refuses_only_its_recipients(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    routes(match={"recipient": f"sales@{domain}", "headers": [{"name": "Subject", "regex": "(?i)offer"}]},
           actions=[{"type": "reject", "message": "No offers, thanks"}], priority=1)
    routes(match={"domain": domain}, actions=[{"type": "hold"}], priority=5)
    sales, desk = f"sales@{domain}", f"desk@{domain}"
    stack.wait_routed(desk)
    answers, data = deliver(stack, [sales, desk], message(sales, subject="A great offer"))
    assert [code for code, _ in answers] == [250, 250]  # the header criterion is only known at DATA
    row = stored(stack, queued_id(data))
    assert row is not None and row["rcpt_to"] == [desk]
    _, data = deliver(stack, [sales], message(sales, subject="Another offer"))
    assert data is not None and data == (550, b"5.7.1 No offers, thanks")


class ProxySMTP(smtplib.SMTP):
    """smtplib that opens with a PROXY protocol v1 header, as HAProxy in front of the door would."""

    def __init__(self, *args: Any, client_ip: str, **kw: Any) -> None:
        self.client_ip = client_ip
        super().__init__(*args, **kw)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout)
        sock.sendall(f"PROXY TCP4 {self.client_ip} 127.0.0.1 40000 {port}\r\n".encode())
        return sock


def test_behind_a_proxy_the_client_is_the_proxy_headers_source(
        stack: Stack, domain: str, routes: Callable[..., dict[str, Any]]) -> None:
    port = free_port()
    door = stack.add_smtp_ingress("smtp-ingress-mx-proxy", {
        "MAILGATE_SMTP_PROXY_PROTOCOL": "true",
        "MAILGATE_MX_HOST": "127.0.0.1", "MAILGATE_MX_PORT": str(port), "MAILGATE_MX_HOSTNAME": MX_HOSTNAME,
    })
    routes(match={"domain": domain}, actions=[{"type": "hold"}])
    address = f"proxied@{domain}"
    try:
        door.start()
        with ProxySMTP("127.0.0.1", port, timeout=15, client_ip="203.0.113.7") as client:
            client.ehlo("client.example.net")
            client.mail("alice@sender.example.net")
            assert client.rcpt(address)[0] == 250
            data = client.data(message(address))
        row = stored(stack, queued_id(data))
        assert row is not None and row["remote_ip"] == "203.0.113.7"
        assert b"([203.0.113.7])" in row["raw"].split(b"\r\n\r\n", 1)[0]
    finally:
        stack.services.pop("smtp-ingress-mx-proxy").kill(15)
