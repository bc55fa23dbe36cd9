"""inboundMessage in the webhooks service: who gets it, its stored form, and the status contract."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from mailgate_common import events, service_settings
from mailgate_common.crypto import Sealer
from mailgate_webhooks import inbound, plan
from mailgate_webhooks.attempts import refusal
from mailgate_webhooks.payload import JSON, RFC822, frame, render_inbound, unframe
from mailgate_webhooks.store import SUBSCRIPTION_SETTINGS, EndpointRow, InboundRow, Subscriptions
from mailgate_webhooks.targets import Targets

SEALER = Sealer("current-secret")
RAW = b"From: a@example.org\r\nTo: t+7@help.example.com\r\nSubject: hi\r\n\r\nhello\r\n"


class Slots:
    def __init__(self, room: int = 8) -> None:
        self.per = room

    def room(self, dest: str) -> int:
        return self.per

    def free(self) -> int:
        return 100


def endpoint(endpoint_id: str, **fields: object) -> EndpointRow:
    values: dict[str, object] = dict(
        id=endpoint_id, url=f"https://{endpoint_id}.example/hooks", account_id=None, events=["messageSent"],
        accounts=None, headers={}, secret=SEALER.seal({"secret": f"whsec_{endpoint_id}"}), previous_secret=None,
        ready=True)
    values.update(fields)
    return EndpointRow(**values)  # type: ignore[arg-type]


def inbound_event(endpoints: list[str], payload: str = "json") -> events.InboundMessage:
    return events.InboundMessage(message="inb_1", route="rt_1", route_name="Support",
                                 recipients=["t+7@help.example.com"], endpoints=endpoints,
                                 payload=payload)  # type: ignore[arg-type]


def target(e: EndpointRow) -> object:
    return Targets(SEALER).for_endpoint(e.url, e.headers, e.secret, e.previous_secret, e.id)


def test_routed_events_go_to_their_endpoints_only_whatever_the_filters() -> None:
    event = inbound_event(["wh_a", "wh_gone", "wh_b", "wh_a"])
    wanted = [plan.Wanted(0, event, "inboundMessage")]
    rows = {"wh_a": endpoint("wh_a"), "wh_b": endpoint("wh_b", ready=False)}
    planned = plan.plan_routed(wanted, {0: b"{}"}, rows, Slots(), endpoint_target=target)  # type: ignore[arg-type]
    assert [(p.dest, p.target is not None, p.payload) for p in planned] == [
        ("wh_a", True, b"{}"), ("wh_b", False, b"{}")]
    # No body (the message is gone): no delivery.
    assert plan.plan_routed(wanted, {}, rows, Slots(), endpoint_target=target) == []  # type: ignore[arg-type]


def test_subscriptions_never_see_a_routed_event() -> None:
    subscribed = Subscriptions(service_settings.with_defaults(
        SUBSCRIPTION_SETTINGS, {"webhooks": "https://all.example/hooks"}), {}, True)
    event = inbound_event(["wh_a"])
    assert plan.urls_for(subscribed, event, "inboundMessage") == []
    planned = plan.plan([plan.Wanted(0, event, "inboundMessage")], subscribed, [endpoint("wh_a", events=["*"])],
                        Slots(), service_secret="whsec_x", endpoint_target=target,  # type: ignore[arg-type]
                        service_url=None)
    assert planned == []


def test_a_raw_body_is_framed_so_it_can_never_pass_for_json() -> None:
    forged = b'{"serviceUrl":null,"event":"inboundMessage"}'
    assert unframe(frame(forged, RFC822)) == (RFC822, forged)
    assert unframe(frame(b"\x00odd\x00", RFC822)) == (RFC822, b"\x00odd\x00")
    assert unframe(b'{"a":1}') == (JSON, b'{"a":1}')


def row(deliveries: list[dict[str, object]]) -> InboundRow:
    return InboundRow(id="inb_1", received_at=datetime(2026, 12, 7, tzinfo=UTC), remote_ip="192.0.2.1",
                      helo="h.example", mail_from="a@example.org", rcpt_to=["t+7@help.example.com"], tls=None,
                      auth={}, spam={}, automated="bounce", deliveries=deliveries, raw_size=len(RAW))


def test_the_body_is_rendered_with_the_stored_tag_and_captures() -> None:
    stored = row([{"route": "rt_other", "tag": "x"},
                  {"route": "rt_1", "routeName": "Support", "tag": "7", "captures": {"n": "1"}}])
    event = inbound_event(["wh_a"])
    ref = inbound.route_ref(event, stored.deliveries)
    assert (ref.tag, ref.captures) == ("7", {"n": "1"})
    stored_payload = render_inbound(event, inbound.received(stored, RAW), ref, service_url=None,
                                    base_url="https://mail.example.com", inline_max=10)
    body = msgspec.json.decode(stored_payload)
    assert body["event"] == "inboundMessage" and body["eventId"] == event.id and body["serviceUrl"] is None
    data = body["data"]
    assert data["recipient"]["tag"] == "7" and data["recipient"]["captures"] == {"n": "1"}
    assert data["automated"] is True and data["automatedReason"] == "bounce"
    assert data["raw"]["url"] == "https://mail.example.com/v1/inbound/messages/inb_1/raw"
    raw_payload = render_inbound(inbound_event(["wh_a"], "raw"), inbound.received(stored, RAW), ref,
                                 service_url=None, base_url="x", inline_max=10)
    assert unframe(raw_payload) == (RFC822, RAW)


def test_status_contract_406_and_410_end_only_inbound_deliveries() -> None:
    assert refusal("inboundMessage", 406) is not None and refusal("inboundMessage", 410) is not None
    for status in (200, 400, 404, 429, 500, 503, None):
        assert refusal("inboundMessage", status) is None
    # EmailEngine's events keep EmailEngine's behaviour: every non-2xx is retried.
    assert refusal("messageSent", 410) is None and refusal("messageNew", 406) is None


def test_links_fall_back_to_the_api_address() -> None:
    assert inbound.api_base_url("127.0.0.1", 3000) == "http://127.0.0.1:3000"
    assert inbound.api_base_url("0.0.0.0", 3000) == "http://127.0.0.1:3000"
    assert inbound.api_base_url("::", 3000) == "http://[::1]:3000"
    assert inbound.api_base_url("api.internal", 8080) == "http://api.internal:8080"
