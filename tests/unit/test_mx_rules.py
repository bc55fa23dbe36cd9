"""The MX door's rules without a network: rate limits, the status contract of synchronous
routes, loops and automated mail, and which endpoints the asynchronous events still name."""

from __future__ import annotations

import pytest

from mailgate_common import events
from mailgate_common.inbound.routes import RecipientMatch, build_route
from mailgate_smtp_ingress import mx_message
from mailgate_smtp_ingress.mx_handler import inbound_events
from mailgate_smtp_ingress.mx_sync import Call, Endpoint, RouteCall, answer_text, smtp_reply
from mailgate_smtp_ingress.rate_limits import RateLimit

HOST = "mx.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_a_burst_then_refills_per_minute() -> None:
    clock = Clock()
    limit = RateLimit(3, clock=clock)
    assert [limit.take("1.2.3.4") for _ in range(4)] == [True, True, True, False]
    assert limit.take("5.6.7.8")  # keys are independent
    assert limit.retry_after("1.2.3.4") == pytest.approx(20.0)
    clock.now += 20
    assert limit.take("1.2.3.4") and not limit.take("1.2.3.4")


def test_rate_limit_zero_is_unlimited_and_keys_are_bounded() -> None:
    assert all(RateLimit(0).take("x") for _ in range(1000))
    limit = RateLimit(1, max_keys=10)
    for n in range(100):
        limit.take(f"10.0.0.{n}")
    assert len(limit._buckets) == 10


@pytest.mark.parametrize(("status", "text", "reply"), [
    (200, None, None),
    (204, "ignored", None),
    (550, "No such ticket", "550 5.7.1 No such ticket"),
    (552, None, "552 5.3.4 The recipient application refused the message"),
    (500, "Broken", "550 5.7.1 Broken"),
    (503, None, "550 5.7.1 The recipient application refused the message"),
    (451, "Busy", "451 4.3.0 Busy"),
    (450, None, "450 4.2.0 The recipient application asks to try again later"),
    (404, "Not here", "451 4.7.1 Not here"),
    (429, None, "451 4.7.1 The recipient application asks to try again later"),
    (302, None, "451 4.4.1 The recipient application gave no usable answer, try again later"),
])
def test_status_contract(status: int, text: str | None, reply: str | None) -> None:
    assert smtp_reply(status, text) == reply


@pytest.mark.parametrize(("body", "content_type", "text"), [
    ("Mailbox full\n", "text/plain; charset=utf-8", "Mailbox full"),
    ("two\nlines", "text/plain", None),
    ('{"error": "x"}', "application/json", None),
    ("x" * 201, "text/plain", None),
    ("bell\x07 and tab\there", "text/plain", "bell and tabhere"),
])
def test_only_a_short_plain_line_becomes_the_reply_text(body: str, content_type: str, text: str | None) -> None:
    assert answer_text(body, content_type) == text


def _raw(*headers: str, body: str = "Hi\r\n") -> bytes:
    return ("\r\n".join([*headers, "From: a@example.net", "Subject: Hello"]) + "\r\n\r\n" + body).encode()


def test_loops_are_refused_by_own_and_total_hops() -> None:
    own = f"Received: from x ([1.2.3.4])\r\n\tby {HOST} (mailgate) with ESMTP id 1;\r\n\tMon, 7 Dec 2026 10:00 +0000"
    assert mx_message.loop_reply(_raw(own, own), HOST) is None
    assert mx_message.loop_reply(_raw(own, own, own), HOST) == mx_message.LOOP
    many = ["Received: from relay.example by next.example; Mon, 7 Dec 2026 10:00 +0000"] * 51
    assert mx_message.loop_reply(_raw(*many), HOST) == mx_message.LOOP


@pytest.mark.parametrize(("headers", "null_sender", "reason"), [
    ((), False, None),
    ((), True, "bounce"),
    (("Content-Type: multipart/report; report-type=delivery-status; boundary=x",), False, "bounce"),
    (("Auto-Submitted: auto-replied",), False, "auto-replied"),
    (("Auto-Submitted: auto-generated",), False, "auto-generated"),
    (("Auto-Submitted: no",), False, None),
    (("Precedence: bulk",), False, "list"),
    (("List-Id: <news.example.net>",), False, "list"),
    ((f"Received: from a ([1.2.3.4]) by {HOST} (mailgate) with ESMTP id 1; Mon, 7 Dec 2026 10:00 +0000",),
     False, "mailgate"),
])
def test_automated_mail_is_flagged(headers: tuple[str, ...], null_sender: bool, reason: str | None) -> None:
    raw = _raw(*headers)
    assert mx_message.automated(raw, mx_message.headers_of(raw), null_sender=null_sender, hostname=HOST) == reason


def test_vacation_wording_is_an_auto_reply() -> None:
    raw = _raw(body="I am currently out of the office until Monday.\r\n")
    assert mx_message.automated(raw, mx_message.headers_of(raw), null_sender=False, hostname=HOST) == "auto-replied"


def test_trace_fields_go_on_top_in_the_clients_line_endings() -> None:
    field = mx_message.received_field(helo="mta.example.net", ip="192.0.2.1", hostname=HOST, tls="TLSv1.3",
                                      message_id="abc", recipient="a@b.example")
    assert field.startswith(b"Received: from mta.example.net ([192.0.2.1])\r\n\tby mx.example.com (mailgate) with"
                            b" ESMTPS (TLSv1.3) id abc\r\n\tfor <a@b.example>;")
    assert mx_message.stored_copy(b"Subject: x\n\nbody\n", field).startswith(b"Received: from mta.example.net "
                                                                             b"([192.0.2.1])\n\tby")


def _match(route_id: str, actions: list[dict[str, object]], address: str = "a@in.example.com") -> RecipientMatch:
    route = build_route(id=route_id, name=route_id, priority=1, account=None, match={"domain": "in.example.com"},
                        actions=actions)
    return RecipientMatch(route, address)


def test_events_leave_out_endpoints_a_synchronous_call_delivered_to() -> None:
    sync_route = _match("r1", [{"type": "webhook", "endpoints": ["e1"], "sync": True},
                               {"type": "webhook", "endpoints": ["e2"]}])
    other = _match("r2", [{"type": "webhook", "endpoints": ["e3"], "payload": "raw"}, {"type": "hold"}])
    sync_event = events.InboundMessage(message="m", route="r1", route_name="r1", recipients=["a@in.example.com"],
                                       endpoints=["e1"])
    call = Call(Endpoint("e1", "http://app", {}, "s", None), 200, None, None, None, events.utcnow(), 5, b"{}")
    staged = inbound_events([sync_route, other], "m", {"r1": RouteCall(sync_event, [call])})
    by_route = {e.route: e for e in staged if isinstance(e, events.InboundMessage)}
    assert by_route["r1"].endpoints == ["e2"] and by_route["r1"].id == sync_event.id
    assert by_route["r2"].endpoints == ["e3"] and by_route["r2"].payload == "raw"


def test_a_route_whose_only_endpoint_was_called_synchronously_stages_nothing() -> None:
    sync_route = _match("r1", [{"type": "webhook", "endpoints": ["e1"], "sync": True}])
    sync_event = events.InboundMessage(message="m", route="r1", route_name="r1", recipients=[], endpoints=["e1"])
    call = Call(Endpoint("e1", "http://app", {}, "s", None), 202, None, None, None, events.utcnow(), 5, b"{}")
    assert inbound_events([sync_route], "m", {"r1": RouteCall(sync_event, [call])}) == []
