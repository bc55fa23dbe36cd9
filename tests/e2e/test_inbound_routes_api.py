"""/v1/inbound: routes (CRUD, validation by field, account tokens, the dry run) and the
messages the MX door received (list, read, raw, attachments, delete, release, retention).

Messages are inserted as the door stores them (``stack.rows``); the door's own path,
from SMTP to webhook, is tested with the door."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aio_pika
import httpx

from mailgate_common import events, retention, topology
from mailgate_common.db import Database
from mailgate_common.inbound import payload
from mailgate_common.settings import load_settings
from tests.support.stack import Stack, wait_for
from tests.support.webhook_receiver import WebhookReceiver

PDF = b"%PDF-1.4 " + bytes(range(256)) * 40


def domain() -> str:
    return f"in-{uuid.uuid4().hex[:8]}.example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_route(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/inbound/routes", json={"name": "Route", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


# --- routes ----------------------------------------------------------------------------------


def test_route_crud_in_priority_order(
    api: httpx.Client, stack: Stack, endpoints: Callable[..., dict[str, Any]], webhook_receiver: WebhookReceiver
) -> None:
    hook = endpoints(webhook_receiver.url)
    at = domain()
    later = create_route(api, name="Catch-all", priority=50, match={"domain": at.upper()},
                         actions=[{"type": "hold"}])
    first = create_route(api, name="Support", priority=10, description="tickets", maxSize=1_000_000,
                         match={"recipient": f"Support@{at}", "headers": [{"name": "Subject", "regex": "(?i)help"}]},
                         actions=[{"type": "webhook", "endpoints": [hook["id"]], "payload": "raw"}, {"type": "stop"}])
    assert first["id"].startswith("rt_") and first["account"] is None and first["enabled"] is True
    assert first["match"] == {"recipient": f"support@{at}", "headers": [{"name": "subject", "regex": "(?i)help"}]}
    assert first["actions"] == [{"type": "webhook", "endpoints": [hook["id"]], "payload": "raw", "sync": False},
                                {"type": "stop"}]
    assert first["maxSize"] == 1_000_000 and first["description"] == "tickets" and "warnings" not in first
    assert later["warnings"] and "catch-all routes attract spam" in later["warnings"][0]
    [(stored_domain,)] = stack.rows("SELECT domain FROM inbound_routes WHERE id = $1", later["id"])
    assert stored_domain == at  # lower-cased: the door's accept-list

    assert api.get(f"/v1/inbound/routes/{first['id']}").json() == first
    listed = api.get("/v1/inbound/routes", params={"pageSize": 1000}).json()
    ours = [r["id"] for r in listed["routes"] if r["id"] in (first["id"], later["id"])]
    assert ours == [first["id"], later["id"]] and listed["total"] >= 2

    changed = api.put(f"/v1/inbound/routes/{later['id']}", json={"priority": 1, "enabled": False,
                                                                "description": "paused"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["priority"] == 1 and changed.json()["enabled"] is False
    assert changed.json()["match"] == {"domain": at} and changed.json()["description"] == "paused"
    listed = api.get("/v1/inbound/routes", params={"pageSize": 1000}).json()
    assert [r["id"] for r in listed["routes"] if r["id"] in (first["id"], later["id"])] == [later["id"], first["id"]]
    cleared = api.put(f"/v1/inbound/routes/{first['id']}", json={"maxSize": None, "description": None}).json()
    assert cleared["maxSize"] is None and cleared["description"] is None and cleared["name"] == "Support"

    assert api.delete(f"/v1/inbound/routes/{first['id']}").json() == {"deleted": True, "id": first["id"]}
    missing = error(api.get(f"/v1/inbound/routes/{first['id']}"), 404)
    assert missing["code"] == "RouteNotFound"
    assert api.delete(f"/v1/inbound/routes/{later['id']}").status_code == 200


def test_invalid_routes_are_refused_naming_the_field(
    api: httpx.Client, endpoints: Callable[..., dict[str, Any]], webhook_receiver: WebhookReceiver
) -> None:
    hook = endpoints(webhook_receiver.url)
    at = domain()
    hold = [{"type": "hold"}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"match": {"recipient": f"a@{at}", "domain": at}, "actions": hold}, "match"),
        ({"match": {}, "actions": hold}, "match"),
        ({"match": {"recipient": "no-at-sign"}, "actions": hold}, "match.recipient"),
        ({"match": {"domain": "bad_domain..example"}, "actions": hold}, "match.domain"),
        ({"match": {"recipientRegex": "^(ticket@"}, "actions": hold}, "match.recipientRegex"),
        ({"match": {"domain": at, "headers": [{"name": "Sub ject", "regex": "x"}]}, "actions": hold},
         "match.headers[0].name"),
        ({"match": {"domain": at, "auth": {"dmarc": ["passed"]}}, "actions": hold}, "match.auth.dmarc"),
        ({"match": {"domain": at}, "actions": []}, "actions"),
        ({"match": {"domain": at}, "actions": [{"type": "forward", "to": "x"}]}, "actions[0].type"),
        ({"match": {"domain": at}, "actions": [{"type": "webhook", "endpoints": [hook["id"]], "payload": "xml"}]},
         "actions[0].payload"),
    ]
    for body, field in cases:
        refused = error(api.post("/v1/inbound/routes", json={"name": "bad", **body}), 400)
        assert refused["field"] == field, (body, refused)
        assert refused["code"] == "InputValidationError"
    regex = error(api.post("/v1/inbound/routes", json={
        "name": "bad", "match": {"recipientRegex": "^(ticket@"}, "actions": hold}), 400)
    assert "missing )" in regex["message"]  # the regex engine's own words
    unknown = error(api.post("/v1/inbound/routes", json={"name": "bad", "match": {"domain": at}, "actions": [
        {"type": "hold"}, {"type": "webhook", "endpoints": [hook["id"], "wh_missing"]}]}), 404)
    assert unknown["field"] == "actions[1].endpoints[1]"
    missing_name = error(api.post("/v1/inbound/routes", json={"match": {"domain": at}, "actions": hold}), 400)
    assert missing_name["field"] == "name"
    route = create_route(api, match={"domain": at}, actions=hold)
    bad_change = error(api.put(f"/v1/inbound/routes/{route['id']}", json={"match": {"recipientRegex": "[z-a]"}}), 400)
    assert bad_change["field"] == "match.recipientRegex"
    assert api.get(f"/v1/inbound/routes/{route['id']}").json()["match"] == {"domain": at}  # unchanged
    api.delete(f"/v1/inbound/routes/{route['id']}")


def test_an_account_token_manages_only_its_own_routes_and_endpoints(
    api: httpx.Client, stack: Stack, account: str, endpoints: Callable[..., dict[str, Any]],
    webhook_receiver: WebhookReceiver,
) -> None:
    own_hook = endpoints(webhook_receiver.url, account=account)
    global_hook = endpoints(webhook_receiver.url)
    admins = create_route(api, match={"domain": domain()}, actions=[{"type": "hold"}])
    token = api.post("/v1/token", json={"account": account, "scopes": ["api"]}).json()["token"]
    at = domain()
    with httpx.Client(base_url=stack.api_url, headers=bearer(token), timeout=15) as client:
        mine = client.post("/v1/inbound/routes", json={
            "name": "Mine", "match": {"recipient": f"help@{at}"},
            "actions": [{"type": "webhook", "endpoints": [own_hook["id"]]}]})
        assert mine.status_code == 201, mine.text
        assert mine.json()["account"] == account
        mine_id = mine.json()["id"]
        theirs = error(client.post("/v1/inbound/routes", json={
            "name": "x", "match": {"domain": at}, "actions": [{"type": "webhook", "endpoints": [global_hook["id"]]}]}),
            404)
        assert theirs["field"] == "actions[0].endpoints[0]"
        other = error(client.post("/v1/inbound/routes", json={
            "name": "x", "account": "someone-else", "match": {"domain": at}, "actions": [{"type": "hold"}]}), 403)
        assert other["field"] == "account"
        assert client.get(f"/v1/inbound/routes/{admins['id']}").status_code == 404
        assert client.put(f"/v1/inbound/routes/{admins['id']}", json={"enabled": False}).status_code == 404
        assert client.delete(f"/v1/inbound/routes/{admins['id']}").status_code == 404
        assert client.post(f"/v1/inbound/routes/{admins['id']}/test", json={"recipient": "a@b.example"}) \
            .status_code == 404
        listed = client.get("/v1/inbound/routes", params={"pageSize": 1000}).json()
        assert [r["id"] for r in listed["routes"]] == [mine_id]
        assert client.get("/v1/inbound/routes", params={"account": "someone-else"}).status_code == 403
        assert client.put(f"/v1/inbound/routes/{mine_id}", json={"priority": 5}).json()["priority"] == 5
        assert client.get("/v1/inbound/messages").status_code == 403  # received mail is the operator's
        assert client.delete(f"/v1/inbound/routes/{mine_id}").status_code == 200
    # An admin may give an account a route, but not with another account's endpoint.
    cross = error(api.post("/v1/inbound/routes", json={
        "name": "x", "account": None, "match": {"domain": at},
        "actions": [{"type": "webhook", "endpoints": [own_hook["id"]]}]}), 400)
    assert cross["field"] == "actions[0].endpoints[0]"
    api.delete(f"/v1/inbound/routes/{admins['id']}")


def test_the_dry_run_says_which_routes_take_a_recipient(api: httpx.Client) -> None:
    at = domain()
    support = create_route(api, name="Support", priority=10, match={"recipient": f"support@{at}"},
                           actions=[{"type": "hold"}])
    tickets = create_route(api, name="Tickets", priority=20,
                           match={"recipientRegex": rf"^ticket-(?P<id>\d+)@{at.replace('.', '[.]')}$",
                                  "headers": [{"name": "Subject", "regex": "(?i)urgent"}]},
                           actions=[{"type": "hold"}, {"type": "stop"}])
    trusted = create_route(api, name="Trusted", priority=30, enabled=False,
                           match={"domain": at, "auth": {"dmarc": ["pass"]}}, actions=[{"type": "hold"}])
    answer = api.post(f"/v1/inbound/routes/{trusted['id']}/test", json={"recipient": f"Support+42@{at}"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["rcpt"] == "accepted"
    assert [(r["id"], r["tag"], r["takes"]) for r in result["routes"]] == [
        (support["id"], "42", True), (trusted["id"], "42", None)]
    assert result["route"]["authMatch"] is None and result["route"]["enabled"] is False
    assert any("unknown" in note for note in result["notes"])
    assert any("disabled" in note for note in result["notes"])

    with_verdicts = api.post(f"/v1/inbound/routes/{trusted['id']}/test", json={
        "recipient": f"ticket-77@{at}", "headers": {"Subject": "URGENT: printer"},
        "auth": {"spf": "pass", "dkim": ["pass"], "dmarc": "pass"}}).json()
    assert [(r["id"], r["captures"], r["takes"]) for r in with_verdicts["routes"]] == [
        (tickets["id"], {"id": "77"}, True), (trusted["id"], {}, False)]
    assert with_verdicts["routes"][1]["reason"] == "an earlier route stopped the message"
    assert with_verdicts["route"]["authMatch"] is True

    calm = api.post(f"/v1/inbound/routes/{tickets['id']}/test", json={
        "recipient": f"ticket-77@{at}", "headers": {"Subject": "printer"}}).json()
    assert calm["route"]["takes"] is False and calm["route"]["headersMatch"] is False

    nobody = api.post(f"/v1/inbound/routes/{support['id']}/test", json={"recipient": "x@elsewhere.example"}).json()
    assert nobody["rcpt"] == "no route" and nobody["rcptReply"].startswith("550 5.1.1")
    assert nobody["route"] is None and nobody["routes"] == []
    for route in (support, tickets, trusted):
        api.delete(f"/v1/inbound/routes/{route['id']}")


# --- received messages -------------------------------------------------------------------------


def mime(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Ann Sender <ann@sender.example>"
    message["To"] = "support@help.example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@sender.example>"
    message.set_content("Hello, the printer is on fire.\n")
    message.add_alternative("<p>Hello, the printer is <b>on fire</b>.</p>", subtype="html")
    message.add_attachment(b"col1,col2\n1,2\n", maintype="text", subtype="csv", filename="data.csv")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="Rapport été.pdf")
    return message.as_bytes()


def insert_message(stack: Stack, *, subject: str = "Printer", held: bool = False, age_seconds: float = 0,
                   deliveries: list[dict[str, Any]] | None = None) -> str:
    message_id = "im_" + uuid.uuid4().hex[:16]
    raw = mime(subject)
    stack.rows(
        """INSERT INTO inbound_messages (id, received_at, remote_ip, helo, mail_from, rcpt_to, tls, size,
               message_id, subject, raw, auth, spam, deliveries, held)
           VALUES ($1, now() - make_interval(secs => $2), '192.0.2.7', 'mx.sender.example', 'ann@sender.example',
                   $3, 'TLSv1.3', $4, '<m@sender.example>', $5, $6, $7::jsonb, '{"checked": false}'::jsonb,
                   $8::jsonb, $9)""",
        message_id, float(age_seconds), ["support+42@help.example.com"], len(raw), subject, raw,
        json.dumps({"spf": {"result": "pass", "domain": "sender.example"},
                    "dkim": [{"result": "pass", "domain": "sender.example", "selector": "s1"}],
                    "dmarc": {"result": "pass", "policy": "reject"}}),
        json.dumps(deliveries or []), held,
    )
    return message_id


def test_received_messages_list_read_raw_attachments_and_delete(api: httpx.Client, stack: Stack) -> None:
    route = "rt_" + uuid.uuid4().hex[:8]
    deliveries = [{"route": route, "routeName": "Support", "recipients": ["support+42@help.example.com"],
                   "tag": "42", "captures": {}, "actions": ["hold"]}]
    older = insert_message(stack, subject="Older", age_seconds=60)
    held = insert_message(stack, subject="Held", held=True, deliveries=deliveries)

    listed = api.get("/v1/inbound/messages", params={"pageSize": 1000}).json()
    ids = [m["id"] for m in listed["messages"]]
    assert ids.index(held) < ids.index(older)  # newest first
    summary = next(m for m in listed["messages"] if m["id"] == held)
    assert summary["held"] is True and summary["subject"] == "Held" and summary["mailFrom"] == "ann@sender.example"
    assert summary["rcptTo"] == ["support+42@help.example.com"] and summary["deliveries"] == deliveries
    assert summary["auth"] == {"spf": "pass", "dkim": ["pass"], "dmarc": "pass"}
    assert summary["receivedAt"].endswith("Z") and summary["size"] > len(PDF)
    only_held = [m["id"] for m in api.get("/v1/inbound/messages", params={"held": "true", "pageSize": 1000})
                 .json()["messages"]]
    assert held in only_held and older not in only_held
    by_route = api.get("/v1/inbound/messages", params={"route": route}).json()
    assert [m["id"] for m in by_route["messages"]] == [held] and by_route["total"] == 1

    got = api.get(f"/v1/inbound/messages/{older}").json()
    assert got["remoteIp"] == "192.0.2.7" and got["tls"] == "TLSv1.3" and got["spam"] == {"checked": False}
    parsed = got["message"]
    assert parsed["from"] == {"name": "Ann Sender", "address": "ann@sender.example"}
    assert parsed["subject"] == "Older" and "on fire" in parsed["text"]["plain"]
    assert "<b>on fire</b>" in parsed["text"]["html"]
    assert [(a["index"], a["filename"], a["contentType"]) for a in parsed["attachments"]] == [
        (0, "data.csv", "text/csv"), (1, "Rapport été.pdf", "application/pdf")]
    assert parsed["attachments"][1]["size"] == len(PDF)
    assert parsed["attachments"][1]["url"].endswith(f"/v1/inbound/messages/{older}/attachments/1")

    raw = api.get(f"/v1/inbound/messages/{older}/raw")
    assert raw.headers["content-type"].startswith("message/rfc822") and b"Subject: Older" in raw.content
    pdf = api.get(f"/v1/inbound/messages/{older}/attachments/1")
    assert pdf.status_code == 200 and pdf.content == PDF
    assert pdf.headers["content-type"] == "application/pdf"
    assert "Rapport%20%C3%A9t%C3%A9.pdf" in pdf.headers["content-disposition"]
    assert api.get(f"/v1/inbound/messages/{older}/attachments/2").json()["code"] == "AttachmentNotFound"
    # The webhook body links attachments too large to ride inline: its urls serve the same parts.
    [(stored,)] = stack.rows("SELECT raw FROM inbound_messages WHERE id = $1", older)
    body = payload.build(
        payload.Received(id=older, raw=stored, received_at=datetime.now(UTC), mail_from="ann@sender.example",
                         rcpt_to=["support+42@help.example.com"]),
        payload.RouteRef(id="rt_x", name="X", recipients=["support+42@help.example.com"]),
        base_url=stack.api_url, inline_max=0)
    for linked in body["attachments"]:
        served = api.get(linked["url"])
        assert served.headers["content-type"].split(";")[0] == linked["contentType"]
        assert len(served.content) == linked["size"]

    assert api.delete(f"/v1/inbound/messages/{older}").json() == {"deleted": True, "id": older}
    assert api.get(f"/v1/inbound/messages/{older}").json()["code"] == "MessageNotFound"
    assert api.get(f"/v1/inbound/messages/{older}/raw").status_code == 404
    api.delete(f"/v1/inbound/messages/{held}")


def test_releasing_a_held_message_sends_its_routes_webhook_events(
    api: httpx.Client, stack: Stack, endpoints: Callable[..., dict[str, Any]],
    receivers: Callable[..., WebhookReceiver],
) -> None:
    json_app, raw_app = receivers(), receivers()
    json_hook, raw_hook = endpoints(json_app.url), endpoints(raw_app.url)
    at = domain()
    route = create_route(api, name="Support", match={"recipient": f"support@{at}"}, actions=[
        {"type": "hold"}, {"type": "webhook", "endpoints": [json_hook["id"]]},
        {"type": "webhook", "endpoints": [raw_hook["id"]], "payload": "raw"}])
    deliveries = [{"route": route["id"], "routeName": "Support", "recipients": [f"support+42@{at}"], "tag": "42",
                   "captures": {}, "actions": ["hold", "webhook", "webhook"]}]
    held = insert_message(stack, subject="Held", held=True, deliveries=deliveries)

    async def release_and_tap() -> tuple[httpx.Response, list[events.InboundMessage]]:
        """Release while a queue of our own listens to inbound.# on the stack's exchange."""
        connection = await aio_pika.connect(stack.amqp_url)
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(topology.EXCHANGE, aio_pika.ExchangeType.TOPIC,
                                                      durable=True)
            tap = await channel.declare_queue(exclusive=True)
            await tap.bind(exchange, routing_key="inbound.#")
            released = await asyncio.to_thread(api.post, f"/v1/inbound/messages/{held}/release")
            got: list[events.InboundMessage] = []
            for _ in range(200):
                delivered = await tap.get(no_ack=True, fail=False)
                if delivered is None:
                    if len(got) == 2:
                        break
                    await asyncio.sleep(0.05)
                    continue
                event = events.decode(delivered.body)
                if isinstance(event, events.InboundMessage) and event.message == held:
                    got.append(event)
            return released, got
        finally:
            await connection.close()

    released, got = asyncio.run(release_and_tap())
    assert released.status_code == 200, released.text
    assert released.json()["released"] is True and len(released.json()["events"]) == 2
    assert sorted((e.payload, tuple(e.endpoints)) for e in got) == [
        ("json", (json_hook["id"],)), ("raw", (raw_hook["id"],))]
    assert all(e.route == route["id"] and e.route_name == "Support" and e.recipients == [f"support+42@{at}"]
               for e in got)

    # What the apps see: the JSON body names the message and route, the raw one is the MIME.
    [hook] = wait_for(lambda: json_app.received("inboundMessage"), message="inboundMessage (json)")
    assert hook.json["data"]["id"] == held and hook.json["data"]["route"]["id"] == route["id"]
    [raw] = wait_for(lambda: [h for h in raw_app.hooks if h.status < 300], message="inboundMessage (raw)")
    assert b"Subject: Held" in raw.body

    assert api.get(f"/v1/inbound/messages/{held}").json()["held"] is False
    again = error(api.post(f"/v1/inbound/messages/{held}/release"), 409)
    assert again["code"] == "NotHeld"
    api.delete(f"/v1/inbound/messages/{held}")
    api.delete(f"/v1/inbound/routes/{route['id']}")


def test_retention_deletes_old_received_messages_but_keeps_held_ones(api: httpx.Client, stack: Stack) -> None:
    settings = load_settings({"MAILGATE_DATABASE_URL": stack.database_url})
    window = settings.inbound_retention_days * 86400
    old = insert_message(stack, age_seconds=window + 3600)
    old_held = insert_message(stack, age_seconds=window + 3600, held=True)
    recent = insert_message(stack, age_seconds=window - 3600)

    async def prune() -> dict[str, int]:
        db = Database(settings.database_url, pool_size=1)
        try:
            return await retention.prune_inbound(db, settings)
        finally:
            await db.dispose()

    assert asyncio.run(prune())["inbound"] >= 1
    assert api.get(f"/v1/inbound/messages/{old}").status_code == 404
    assert api.get(f"/v1/inbound/messages/{old_held}").json()["held"] is True
    assert api.get(f"/v1/inbound/messages/{recent}").status_code == 200
    for kept in (old_held, recent):
        api.delete(f"/v1/inbound/messages/{kept}")
