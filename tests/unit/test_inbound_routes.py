"""The inbound route engine: which routes take a recipient, then a message."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import pytest

from mailgate_common.inbound import routes
from mailgate_common.inbound.auth import AuthResults, DkimResult, DmarcResult, SpfResult
from mailgate_common.inbound.routes import (
    Route,
    RouteCache,
    RouteError,
    RouteTable,
    build_route,
    decide,
    delivery_entries,
    first_reject,
    max_size,
    rejects_at_rcpt,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def route(
    id: str,
    match: dict[str, Any],
    actions: list[dict[str, Any]] | None = None,
    *,
    priority: int = 100,
    enabled: bool = True,
    created: int = 0,
    max_size: int | None = None,
) -> Route:
    return build_route(
        id=id,
        name=id.title(),
        priority=priority,
        account=None,
        match=match,
        actions=actions or [{"type": "webhook", "endpoints": ["wh1"]}],
        max_size=max_size,
        enabled=enabled,
        created_at=T0 + timedelta(seconds=created),
    )


def ids(matches: list[routes.RecipientMatch]) -> list[str]:
    return [m.route.id for m in matches]


def auth(spf: str = "pass", dkim: tuple[str, ...] = ("pass",), dmarc: str = "pass") -> AuthResults:
    return AuthResults(SpfResult(spf), [DkimResult(r, "example.org") for r in dkim], DmarcResult(dmarc))


# --- recipients ---------------------------------------------------------------------------


def test_exact_address_matches_and_nothing_else() -> None:
    table = RouteTable([route("support", {"recipient": "support@help.example.com"})])
    [m] = table.for_recipient("support@help.example.com")
    assert (m.route.id, m.address, m.tag, m.captures) == ("support", "support@help.example.com", None, {})
    assert table.for_recipient("sales@help.example.com") == []
    assert table.for_recipient("support@other.example.com") == []
    assert table.for_recipient("not-an-address") == []


def test_plus_tag_is_split_on_the_first_plus_and_extracted() -> None:
    table = RouteTable([route("support", {"recipient": "support@help.example.com"})])
    [m] = table.for_recipient("support+1234@help.example.com")
    assert m.tag == "1234"
    assert m.address == "support+1234@help.example.com"
    [m] = table.for_recipient("support+a+b@help.example.com")
    assert m.tag == "a+b"
    assert table.for_recipient("supportx+1@help.example.com") == []


def test_a_route_naming_a_tagged_address_matches_it_exactly() -> None:
    table = RouteTable([route("billing", {"recipient": "support+billing@help.example.com"})])
    [m] = table.for_recipient("support+billing@help.example.com")
    assert m.tag is None
    assert table.for_recipient("support@help.example.com") == []


def test_addresses_and_domains_compare_case_insensitively() -> None:
    table = RouteTable([
        route("exact", {"recipient": "Support@Help.Example.com"}, priority=1),
        route("domain", {"domain": "HELP.example.COM"}, priority=2),
    ])
    matches = table.for_recipient("SUPPORT+Tag@help.EXAMPLE.com")
    assert ids(matches) == ["exact", "domain"]
    assert matches[0].address == "SUPPORT+Tag@help.EXAMPLE.com"  # as given, for the payload
    assert matches[0].tag == "Tag"  # matching ignores case; the tag keeps it (ticket ids may need it)


def test_domain_catch_all_takes_every_local_part_with_its_tag() -> None:
    table = RouteTable([route("all", {"domain": "help.example.com"})])
    [m] = table.for_recipient("anyone+x@help.example.com")
    assert m.tag == "x"
    assert ids(table.for_recipient("someone@help.example.com")) == ["all"]
    assert table.for_recipient("someone@sub.help.example.com") == []
    assert table.domains == frozenset({"help.example.com"})


def test_regex_route_gives_named_and_numbered_captures() -> None:
    table = RouteTable([
        route("ticket", {"recipientRegex": r"^ticket-(?P<id>\d+)@help\.example\.com$"}),
        route("numbered", {"recipientRegex": r"^(\w+)-(\d+)@(orders)\.example\.com$"}),
    ])
    [m] = table.for_recipient("Ticket-42@help.example.com")
    assert m.captures == {"id": "42"}
    [m] = table.for_recipient("order-7@orders.example.com")
    assert m.captures == {"1": "order", "2": "7", "3": "orders"}
    assert table.for_recipient("ticket-x@help.example.com") == []


def test_matches_come_by_priority_then_age() -> None:
    table = RouteTable([
        route("late-catch-all", {"domain": "d.example"}, priority=50, created=2),
        route("early-catch-all", {"domain": "d.example"}, priority=50, created=1),
        route("regex", {"recipientRegex": "^a@"}, priority=5),
        route("exact", {"recipient": "a@d.example"}, priority=20),
    ])
    assert ids(table.for_recipient("a@d.example")) == ["regex", "exact", "early-catch-all", "late-catch-all"]


def test_a_disabled_route_never_matches() -> None:
    table = RouteTable([
        route("off", {"recipient": "a@d.example"}, enabled=False),
        route("off-domain", {"domain": "d.example"}, enabled=False),
        route("off-regex", {"recipientRegex": "."}, enabled=False),
    ])
    assert table.for_recipient("a@d.example") == []
    assert len(table) == 0


def test_overlong_addresses_never_match() -> None:
    table = RouteTable([route("any", {"recipientRegex": ".*"})])
    assert table.for_recipient("a" * 300 + "@" + "b" * 30 + ".example") == []


def test_many_routes_are_looked_up_fast() -> None:
    many = [route(f"r{i}", {"recipient": f"user{i}@d{i % 50}.example"}) for i in range(10_000)]
    many += [route(f"d{i}", {"domain": f"catch{i}.example"}) for i in range(2_000)]
    many += [route(f"x{i}", {"recipientRegex": rf"^ticket-{i}-(\d+)@"}) for i in range(100)]
    table = RouteTable(many)
    started = time.perf_counter()
    for i in range(5_000):
        assert ids(table.for_recipient(f"user{i}+t@d{i % 50}.example")) == [f"r{i}"]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"5,000 lookups over 12,100 routes took {elapsed:.2f} s"


# --- messages ------------------------------------------------------------------------------


def test_header_criteria_must_all_match_and_an_absent_header_fails() -> None:
    table = RouteTable([
        route("urgent", {"domain": "d.example", "headers": [
            {"name": "Subject", "regex": "(?i)urgent"}, {"name": "X-Priority", "regex": "^1"}]}),
    ])
    matches = table.for_recipient("a@d.example")
    assert ids(decide(matches, {"Subject": "URGENT: down", "X-Priority": "1 (Highest)"}, auth())) == ["urgent"]
    assert decide(matches, {"Subject": "URGENT: down", "X-Priority": "3"}, auth()) == []
    assert decide(matches, {"Subject": "URGENT: down"}, auth()) == []


def test_header_criteria_read_a_parsed_message_with_encoded_words() -> None:
    table = RouteTable([route("r", {"domain": "d.example", "headers": [{"name": "subject", "regex": "Dringend"}]})])
    msg = message_from_bytes(b"Subject: =?utf-8?q?Dringend=3A_=C3=84nderung?=\r\nTo: a@d.example\r\n\r\nbody\r\n")
    assert ids(decide(table.for_recipient("a@d.example"), msg, None)) == ["r"]


def test_auth_criteria_allow_the_listed_verdicts_only() -> None:
    table = RouteTable([route("strict", {"domain": "d.example", "auth": {"spf": ["pass"], "dmarc": ["pass"]}})])
    matches = table.for_recipient("a@d.example")
    assert ids(decide(matches, {}, auth())) == ["strict"]
    assert decide(matches, {}, auth(spf="softfail")) == []
    assert decide(matches, {}, auth(dmarc="fail")) == []
    assert decide(matches, {}, None) == []  # no verdicts: a verdict criterion cannot hold


def test_dkim_criterion_holds_when_any_signature_has_an_allowed_verdict() -> None:
    table = RouteTable([route("signed", {"domain": "d.example", "auth": {"dkim": ["pass"]}})])
    matches = table.for_recipient("a@d.example")
    assert ids(decide(matches, {}, auth(dkim=("fail", "pass")))) == ["signed"]
    assert decide(matches, {}, auth(dkim=())) == []
    unsigned = RouteTable([route("unsigned-ok", {"domain": "d.example", "auth": {"dkim": ["none", "pass"]}})])
    assert ids(decide(unsigned.for_recipient("a@d.example"), {}, auth(dkim=()))) == ["unsigned-ok"]


def test_every_matching_route_applies_until_one_stops() -> None:
    table = RouteTable([
        route("first", {"recipient": "a@d.example"}, priority=1),
        route("stopper", {"domain": "d.example", "headers": [{"name": "Subject", "regex": "stop"}]},
              [{"type": "hold"}, {"type": "stop"}], priority=2),
        route("last", {"domain": "d.example"}, priority=3),
    ])
    matches = table.for_recipient("a@d.example")
    assert ids(decide(matches, {"Subject": "please stop"}, None)) == ["first", "stopper"]
    # The stopper does not apply, so it does not stop anything.
    assert ids(decide(matches, {"Subject": "go on"}, None)) == ["first", "last"]


def test_reject_at_rcpt_only_when_certain() -> None:
    reject = [{"type": "reject", "message": "no thanks"}]
    plain = RouteTable([route("no", {"recipient": "a@d.example"}, reject)])
    action = rejects_at_rcpt(plain.for_recipient("a@d.example"))
    assert action is not None and action.message == "no thanks"
    with_criteria = RouteTable([route("no", {"recipient": "a@d.example", "headers": [
        {"name": "Subject", "regex": "x"}]}, reject)])
    matches = with_criteria.for_recipient("a@d.example")
    assert rejects_at_rcpt(matches) is None
    reject_action = first_reject(decide(matches, {"Subject": "x"}, None))
    assert reject_action is not None and reject_action.message == "no thanks"
    stopped_first = RouteTable([
        route("ok", {"recipient": "a@d.example"}, [{"type": "webhook", "endpoints": ["w"]}, {"type": "stop"}],
              priority=1),
        route("no", {"domain": "d.example"}, reject, priority=2),
    ])
    assert rejects_at_rcpt(stopped_first.for_recipient("a@d.example")) is None
    maybe_stopped = RouteTable([
        route("maybe", {"recipient": "a@d.example", "auth": {"spf": ["pass"]}}, [{"type": "stop"}], priority=1),
        route("no", {"domain": "d.example"}, reject, priority=2),
    ])
    assert rejects_at_rcpt(maybe_stopped.for_recipient("a@d.example")) is None


def test_max_size_is_the_smallest_route_limit_never_above_the_default() -> None:
    table = RouteTable([
        route("big", {"recipient": "a@d.example"}, max_size=50_000_000),
        route("small", {"domain": "d.example"}, max_size=1_000_000),
        route("unset", {"recipientRegex": "^a@"}),
    ])
    assert max_size(table.for_recipient("a@d.example"), 25_000_000) == 1_000_000
    assert max_size(table.for_recipient("b@d.example"), 25_000_000) == 1_000_000
    assert max_size(RouteTable([route("big", {"recipient": "a@d.example"}, max_size=50_000_000)])
                    .for_recipient("a@d.example"), 25_000_000) == 25_000_000


def test_delivery_entries_group_recipients_by_route() -> None:
    table = RouteTable([route("all", {"domain": "d.example"}, priority=2),
                        route("support", {"recipient": "support@d.example"}, [{"type": "hold"}], priority=1)])
    taken = [*table.for_recipient("other@d.example"), *table.for_recipient("support+7@d.example")]
    assert delivery_entries(taken) == [
        {"route": "support", "routeName": "Support", "recipients": ["support+7@d.example"], "tag": "7",
         "captures": {}, "actions": ["hold"]},
        {"route": "all", "routeName": "All", "recipients": ["other@d.example", "support+7@d.example"],
         "tag": None, "captures": {}, "actions": ["webhook"]},
    ]


# --- the stored JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "actions", "field"),
    [
        ({}, None, "match"),
        ({"recipient": "a@d.example", "domain": "d.example"}, None, "match"),
        ({"recipient": "not an address"}, None, "match.recipient"),
        ({"domain": "-bad-.example"}, None, "match.domain"),
        ({"domain": "localhost"}, None, "match.domain"),
        ({"recipientRegex": "(unclosed"}, None, "match.recipientRegex"),
        ({"recipientRegex": "a" * 1001}, None, "match.recipientRegex"),
        ({"domain": "d.example", "headers": [{"name": "Bad:Name", "regex": "x"}]}, None, "match.headers[0].name"),
        ({"domain": "d.example", "headers": [{"name": "Subject", "regex": "["}]}, None, "match.headers[0].regex"),
        ({"domain": "d.example", "auth": {"spf": ["great"]}}, None, "match.auth.spf"),
        ({"domain": "d.example", "auth": {"arc": ["pass"]}}, None, "match.auth.arc"),
        ({"domain": "d.example", "sender": "x"}, None, "match.sender"),
        ({"domain": "d.example"}, [], "actions"),
        ({"domain": "d.example"}, [{"type": "hold"}] * 51, "actions"),
        ({"domain": "d.example", "headers": [{"name": "X", "regex": "x"}] * 51}, None, "match.headers"),
        ({"domain": "d.example"}, [{"type": "forward"}], "actions[0].type"),
        ({"domain": "d.example"}, [{"type": "webhook", "endpoints": []}], "actions[0].endpoints"),
        ({"domain": "d.example"}, [{"type": "hold"}, {"type": "webhook", "endpoints": [""]}],
         "actions[1].endpoints[0]"),
        ({"domain": "d.example"}, [{"type": "webhook", "endpoints": ["w"], "payload": "xml"}], "actions[0].payload"),
        ({"domain": "d.example"}, [{"type": "reject", "message": "two\nlines"}], "actions[0].message"),
    ],
)
def test_invalid_routes_name_the_field(match: dict[str, Any], actions: list[dict[str, Any]] | None,
                                       field: str) -> None:
    with pytest.raises(RouteError) as raised:
        build_route(id="x", name="x", priority=1, account=None, match=match,
                    actions=[{"type": "hold"}] if actions is None else actions)
    assert raised.value.field == field


def test_criteria_are_stored_normalized() -> None:
    criteria = routes.parse_match({"recipient": "Support@Bücher.Example", "headers": [
        {"name": "Subject", "regex": "x"}], "auth": {"spf": ["PASS", "softfail"]}})
    assert criteria.as_json() == {"recipient": "support@xn--bcher-kva.example", "headers": [
        {"name": "subject", "regex": "x"}], "auth": {"spf": ["pass", "softfail"]}}
    assert criteria.domain == "xn--bcher-kva.example"


# --- the cache -----------------------------------------------------------------------------


async def test_cache_reloads_at_most_every_ttl_one_load_at_a_time_and_keeps_the_last_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[int] = []
    failing = False

    async def fake_load(db: object) -> RouteTable:
        loads.append(1)
        await asyncio.sleep(0.01)
        if failing:
            raise OSError("database away")
        return RouteTable([route(f"r{len(loads)}", {"domain": "d.example"})])

    monkeypatch.setattr(routes, "load", fake_load)
    cache = RouteCache(db=None, ttl=60)  # type: ignore[arg-type]
    tables = await asyncio.gather(*(cache.table() for _ in range(20)))
    assert len(loads) == 1 and all(t is tables[0] for t in tables)
    assert await cache.table() is tables[0]

    failing = True
    cache.invalidate()
    kept = await cache.table()
    assert kept is tables[0] and len(loads) == 2
    assert await cache.table() is kept and len(loads) == 2  # the failure waits for the next ttl

    empty = RouteCache(db=None, ttl=60)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        await empty.table()
