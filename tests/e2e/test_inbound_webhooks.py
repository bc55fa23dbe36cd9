"""inboundMessage webhooks: a received message, rendered from its stored row, reaches exactly the
endpoints its route names, signed, retried, and refused (406/410) as the status contract says."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import smtplib
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mailgate_common import events
from mailgate_common.bus import Bus
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import Hook, Reply, WebhookReceiver

pytestmark = pytest.mark.timeout(120)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
AUTH = {"spf": {"result": "pass", "domain": "sender.example.net"}, "dkim": [], "dmarc": {"result": "none"}}


def mime(to: str, *, attachment: bytes = b"%PDF-1.7 small", subject: str = "Order über 5") -> bytes:
    msg = EmailMessage()
    msg["From"] = '"Müller, Jörg" <joerg@sender.example.net>'
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@sender.example.net>"
    msg.set_content("Thanks, that works!\n\nOn Mon, Dec 7, 2026 at 10:00 AM Bob <bob@help.example.com> wrote:\n"
                    "> Try it again.\n")
    msg.add_alternative('<p>Thanks! <img src="cid:logo@x"></p>', subtype="html")
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<logo@x>", filename="logo.png", disposition="inline")
    msg.add_attachment(attachment, "application", "pdf", filename="Rechnung.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def store_message(stack: Stack, raw: bytes, rcpt: str, route: str, *, tag: str | None = None) -> str:
    """An inbound_messages row as the MX door commits it before its 250."""
    message_id = f"inb_{uuid.uuid4().hex[:16]}"
    deliveries: list[dict[str, Any]] = [{"route": route, "routeName": "Support", "recipients": [rcpt],
                                         "tag": tag, "captures": {}, "actions": ["webhook"]}]
    stack.rows(
        "INSERT INTO inbound_messages (id, remote_ip, helo, mail_from, rcpt_to, tls, size, message_id, subject,"
        " raw, auth, spam, deliveries) VALUES ($1, '192.0.2.7', 'mx.sender.example.net',"
        " 'alice@sender.example.net', $2, 'TLSv1.3', $3, '<m@x>', 'Order', $4, $5::jsonb, '{}'::jsonb, $6::jsonb)",
        message_id, [rcpt], len(raw), raw, json.dumps(AUTH), json.dumps(deliveries))
    return message_id


def publish(stack: Stack, event: events.Event) -> None:
    async def run() -> None:
        bus = Bus(stack.amqp_url)
        await bus.connect()
        try:
            await bus.publish(event)
        finally:
            await bus.close()

    asyncio.run(run())


def inbound_event(message_id: str, rcpt: str, endpoint_ids: list[str], payload: str = "json",
                  route: str = "rt_support") -> events.InboundMessage:
    return events.InboundMessage(message=message_id, route=route, route_name="Support", recipients=[rcpt],
                                 endpoints=endpoint_ids, payload=payload)  # type: ignore[arg-type]


def hooks_for(receiver: WebhookReceiver, event_id: str, *, answered: bool = True) -> list[Hook]:
    with receiver.lock:
        hooks = list(receiver.hooks)
    return [h for h in hooks if h.headers.get("webhook-id") == event_id and (h.status < 300 or not answered)]


def deliveries(api: httpx.Client, endpoint_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/webhooks/{endpoint_id}/deliveries")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def test_a_route_with_two_endpoints_delivers_a_signed_body_to_both_and_to_no_one_else(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]], webhook_receiver: WebhookReceiver,
) -> None:
    first, second, bystander, switched_off = receivers(), receivers(), receivers(), receivers()
    # Their filters do not list inboundMessage: a route's endpoints get its mail whatever they say.
    a = endpoints(first.url, events=["messageSent"])
    b = endpoints(second.url, events=["messageBounce"])
    endpoints(bystander.url, events=["*"])
    off = endpoints(switched_off.url, events=["*"])
    api.put(f"/v1/webhooks/{off['id']}", json={"enabled": False}).raise_for_status()
    rcpt = "support+4711@help.example.com"
    raw = mime(f"Support <{rcpt}>")
    message_id = store_message(stack, raw, rcpt, "rt_support", tag="4711")
    event = inbound_event(message_id, rcpt, [a["id"], b["id"], off["id"], "wh_deleted_meanwhile"])
    publish(stack, event)

    [hook_a] = wait_for(lambda: hooks_for(first, event.id), message="the first endpoint's inboundMessage")
    [hook_b] = wait_for(lambda: hooks_for(second, event.id), message="the second endpoint's inboundMessage")
    for hook, endpoint in ((hook_a, a), (hook_b, b)):
        Webhook(endpoint["secret"]).verify(hook.body, hook.headers)
        assert hook.headers["content-type"] == "application/json"
    body = hook_a.json
    assert body["event"] == "inboundMessage" and body["eventId"] == event.id
    data = body["data"]
    assert data["id"] == message_id and data["size"] == len(raw)
    assert data["from"] == {"name": "Müller, Jörg", "address": "joerg@sender.example.net"}
    assert data["subject"] == "Order über 5"
    assert data["recipient"] == {"address": rcpt, "local": "support", "tag": "4711",
                                 "domain": "help.example.com", "captures": {}}
    assert data["envelope"]["mailFrom"] == "alice@sender.example.net" and data["envelope"]["rcptTo"] == [rcpt]
    assert data["text"]["strippedPlain"] == "Thanks, that works!"
    assert data["auth"] == AUTH and data["spam"] == {"checked": False}
    assert data["route"] == {"id": "rt_support", "name": "Support"}
    logo, pdf = data["attachments"]
    assert base64.b64decode(logo["content"]) == PNG and logo["contentId"] == "<logo@x>"
    assert base64.b64decode(pdf["content"]) == b"%PDF-1.7 small"
    assert data["raw"]["url"] == f"{stack.api_url}/v1/inbound/messages/{message_id}/raw"
    assert hook_b.body == hook_a.body  # rendered once per event

    # The delivery log shows them like any other event; nobody else got one.
    [logged] = wait_for(lambda: deliveries(api, a["id"]), message="the delivery log")
    assert logged["event"] == "inboundMessage" and logged["status"] == "delivered"
    assert deliveries(api, off["id"]) == []
    assert hooks_for(bystander, event.id) == [] and hooks_for(switched_off, event.id) == []
    assert hooks_for(webhook_receiver, event.id) == []  # the settings URL takes every event but this


def test_a_raw_route_gets_the_stored_mime_signed_as_message_rfc822_also_when_replayed(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"])
    rcpt = "raw@help.example.com"
    raw = mime(rcpt)
    message_id = store_message(stack, raw, rcpt, "rt_raw")
    event = inbound_event(message_id, rcpt, [endpoint["id"]], payload="raw", route="rt_raw")
    publish(stack, event)

    [hook] = wait_for(lambda: hooks_for(receiver, event.id), message="the raw inboundMessage")
    assert hook.headers["content-type"] == "message/rfc822"
    assert hook.body == raw
    Webhook(endpoint["secret"]).verify(hook.body, hook.headers, json_parse=False)
    ee = base64.urlsafe_b64encode(hmac.new(endpoint["secret"].encode(), raw, hashlib.sha256).digest())
    assert hook.headers["x-ee-wh-signature"] == ee.rstrip(b"=").decode()

    [logged] = wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "delivered"],
                        message="the delivered log entry")
    api.post(f"/v1/webhook-deliveries/{logged['id']}/replay").raise_for_status()
    _, again = wait_for(lambda: (found := hooks_for(receiver, event.id)) and len(found) == 2 and found,
                        message="the replayed call")
    assert again.body == raw and again.headers["content-type"] == "message/rfc822"


def test_an_endpoint_answering_500_is_retried_until_it_takes_the_message(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    receiver.fail_next(2, 500)
    endpoint = endpoints(receiver.url, events=["messageSent"])
    rcpt = "retry@help.example.com"
    message_id = store_message(stack, mime(rcpt), rcpt, "rt_retry")
    event = inbound_event(message_id, rcpt, [endpoint["id"]], route="rt_retry")
    publish(stack, event)

    [hook] = wait_for(lambda: hooks_for(receiver, event.id), timeout=30, message="the retried inboundMessage")
    assert hook.json["data"]["id"] == message_id
    assert [h.status for h in hooks_for(receiver, event.id, answered=False)] == [500, 500, 200]
    [logged] = wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "delivered"],
                        message="the delivered log entry")
    assert logged["attempts"] == 3


@pytest.mark.parametrize("status", [406, 410])
def test_406_and_410_fail_the_delivery_at_once_with_the_reason(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]], status: int,
) -> None:
    receiver = receivers()
    receiver.answer_always(Reply(status, b"not for us", {"content-type": "text/plain"}))
    endpoint = endpoints(receiver.url, events=["messageSent"])
    rcpt = f"refused-{status}@help.example.com"
    message_id = store_message(stack, mime(rcpt), rcpt, "rt_refused")
    event = inbound_event(message_id, rcpt, [endpoint["id"]], route="rt_refused")
    publish(stack, event)

    [logged] = wait_for(lambda: [d for d in deliveries(api, endpoint["id"]) if d["status"] == "failed"],
                        message="the failed log entry")
    assert logged["attempts"] == 1 and logged["statusCode"] == status
    assert f"HTTP {status}" in logged["lastError"] and "not retried" in logged["lastError"]
    assert logged["responseBody"] == "not for us"
    assert len(hooks_for(receiver, event.id, answered=False)) == 1
    # The endpoint answered on purpose: it is not counted as failing.
    health = stack.rows("SELECT consecutive_failures FROM webhook_endpoints WHERE id = $1", endpoint["id"])
    assert health[0][0] == 0


def test_a_ten_megabyte_attachment_arrives_as_a_url_serving_its_bytes(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"])
    big = uuid.uuid4().bytes * (10 * 1024 * 1024 // 16)
    rcpt = "big@help.example.com"
    message_id = store_message(stack, mime(rcpt, attachment=big), rcpt, "rt_big")
    event = inbound_event(message_id, rcpt, [endpoint["id"]], route="rt_big")
    publish(stack, event)

    [hook] = wait_for(lambda: hooks_for(receiver, event.id), timeout=30, message="the inboundMessage")
    assert len(hook.body) < 100_000  # the 10 MB stayed behind
    logo, pdf = hook.json["data"]["attachments"]
    assert "content" in logo
    assert "content" not in pdf and pdf["size"] == len(big)
    assert pdf["url"] == f"{stack.api_url}/v1/inbound/messages/{message_id}/attachments/1"
    fetched = api.get(pdf["url"], timeout=60)
    assert fetched.status_code == 200, fetched.text[:200]
    assert fetched.content == big
    assert fetched.headers["content-type"].startswith("application/pdf")


def test_mail_to_the_mx_door_reaches_the_route_endpoint_with_its_tag(
    stack: Stack, api: httpx.Client, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"])
    domain = f"in-{uuid.uuid4().hex[:8]}.example.com"
    created = api.post("/v1/inbound/routes", json={
        "name": "Tickets", "match": {"recipient": f"tickets@{domain}"},
        "actions": [{"type": "webhook", "endpoints": [endpoint["id"]], "payload": "json"}]})
    assert created.status_code == 201, created.text
    rcpt = f"tickets+T-99@{domain}"

    def send() -> bool:
        with smtplib.SMTP("127.0.0.1", stack.mx_port, timeout=15) as client:
            client.ehlo("client.example.net")
            client.mail("alice@sender.example.net")
            code, _ = client.rcpt(rcpt)
            if code != 250:
                return False  # the door has not read the new route yet
            code, _ = client.data(mime(rcpt))
            assert code == 250
            return True

    wait_for(send, timeout=15, interval=0.3, message="the MX door accepting the route's recipient")
    hooks = wait_for(lambda: [h for h in receiver.received("inboundMessage")
                              if h.json["data"]["recipient"]["address"] == rcpt], message="the inboundMessage")
    Webhook(endpoint["secret"]).verify(hooks[0].body, hooks[0].headers)
    data = hooks[0].json["data"]
    assert data["recipient"]["tag"] == "T-99" and data["recipient"]["local"] == "tickets"
    assert data["route"] == {"id": created.json()["id"], "name": "Tickets"}
    assert data["envelope"]["rcptTo"] == [rcpt]
    api.delete(f"/v1/inbound/routes/{created.json()['id']}")
