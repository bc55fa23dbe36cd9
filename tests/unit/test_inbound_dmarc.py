"""DMARC's parts: the policy record, the organizational domain, alignment, the From domain and the lookup."""

from __future__ import annotations

import dns.asyncresolver
import pytest

from mailgate_common.inbound import dmarc
from mailgate_common.inbound.auth import resolver_from_settings
from mailgate_common.inbound.dmarc import Identifier, Record, RecordError
from mailgate_common.settings import Settings
from tests.support.dns_server import DnsServer


@pytest.fixture(scope="module")
def resolver(dns_server: DnsServer) -> dns.asyncresolver.Resolver:
    return resolver_from_settings(Settings(dns_servers=dns_server.address))


def test_record_tags() -> None:
    assert dmarc.parse_record("v=DMARC1; p=reject; adkim=s; aspf=s; pct=50", subdomain=False) == Record(
        "reject", "s", "s", 50)
    assert dmarc.parse_record("v=DMARC1;p=Quarantine", subdomain=False) == Record("quarantine")


def test_subdomain_policy_applies_to_subdomains_only() -> None:
    record = "v=DMARC1; p=reject; sp=none"
    assert dmarc.parse_record(record, subdomain=False).policy == "reject"
    assert dmarc.parse_record(record, subdomain=True).policy == "none"


def test_record_without_policy_but_with_reports_is_monitoring() -> None:
    assert dmarc.parse_record("v=DMARC1; rua=mailto:d@example.com", subdomain=False).policy == "none"


@pytest.mark.parametrize("text", ["v=DMARC1; p=block", "v=DMARC1", "v=DMARC2; p=reject"])
def test_unreadable_records(text: str) -> None:
    with pytest.raises(RecordError):
        dmarc.parse_record(text, subdomain=False)


def test_unknown_alignment_modes_fall_back_to_relaxed() -> None:
    assert dmarc.parse_record("v=DMARC1; p=none; adkim=x; aspf=", subdomain=False) == Record("none")


@pytest.mark.parametrize(("domain", "organizational"), [
    ("example.com", "example.com"),
    ("mail.news.example.com", "example.com"),
    ("shop.example.co.uk", "example.co.uk"),
    ("Mail.Example.ORG.", "example.org"),
    ("sub.sender.test", "sender.test"),
])
def test_organizational_domain(domain: str, organizational: str) -> None:
    assert dmarc.organizational_domain(domain) == organizational


def test_alignment() -> None:
    assert dmarc.aligned("bounce.example.com", "example.com")
    assert dmarc.aligned("example.com", "news.example.com")
    assert not dmarc.aligned("bounce.example.com", "example.com", "s")
    assert dmarc.aligned("EXAMPLE.com", "example.com", "s")
    assert not dmarc.aligned("example.co.uk", "other.co.uk")
    assert not dmarc.aligned("esp.example.net", "example.com")
    assert not dmarc.aligned(None, "example.com")


@pytest.mark.parametrize(("headers", "expected"), [
    (b"From: Ann <Ann@Mail.Example.com>\r\n", ("mail.example.com", None)),
    (b"From: =?utf-8?q?J=C3=B6rg?= <j@example.de>\r\n", ("example.de", None)),
    (b"From: a@example.com\r\nFrom: b@example.org\r\n", (None, "several From headers")),
    (b"From: a@example.com, b@example.org\r\n", (None, "From names no single address")),
    (b"Subject: x\r\n", (None, "no From header")),
    (b"From: undisclosed\r\n", (None, "From address has no domain")),
    ("From: <jörg@bücher.example>\r\n".encode(), ("xn--bcher-kva.example", None)),
])
def test_from_domain(headers: bytes, expected: tuple[str | None, str | None]) -> None:
    assert dmarc.from_domain(headers + b"To: x@example.net\r\n\r\nFrom: body@not-a-header.example\r\n") == expected


async def test_lookup_falls_back_to_the_organizational_domain(dns_server: DnsServer,
                                                             resolver: dns.asyncresolver.Resolver) -> None:
    dns_server.add("_dmarc.lookup-org.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    assert await dmarc.lookup(resolver, "lookup-org.test") == Record("reject")
    assert await dmarc.lookup(resolver, "news.lookup-org.test") == Record("quarantine")


async def test_subdomain_record_wins_over_the_organizational_one(dns_server: DnsServer,
                                                                resolver: dns.asyncresolver.Resolver) -> None:
    dns_server.add("_dmarc.lookup-own.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.news.lookup-own.test", "TXT", "v=DMARC1; p=none")
    assert await dmarc.lookup(resolver, "news.lookup-own.test") == Record("none")


async def test_other_txt_records_are_ignored_and_two_policies_are_none(
        dns_server: DnsServer, resolver: dns.asyncresolver.Resolver) -> None:
    dns_server.add("_dmarc.lookup-mixed.test", "TXT", "google-site-verification=abc")
    dns_server.add("_dmarc.lookup-mixed.test", "TXT", "v=DMARC1; p=quarantine")
    assert await dmarc.lookup(resolver, "lookup-mixed.test") == Record("quarantine")
    dns_server.add("_dmarc.lookup-two.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.lookup-two.test", "TXT", "v=DMARC1; p=none")
    assert await dmarc.lookup(resolver, "lookup-two.test") is None


async def test_a_long_record_split_in_strings_is_read_whole(dns_server: DnsServer,
                                                           resolver: dns.asyncresolver.Resolver) -> None:
    reports = ",".join(f"mailto:dmarc-{n}@reports.example.com" for n in range(12))
    dns_server.add("_dmarc.lookup-long.test", "TXT", f"v=DMARC1; rua={reports}; p=reject")
    assert await dmarc.lookup(resolver, "lookup-long.test") == Record("reject")


async def test_evaluate_reports_temporary_errors_of_aligned_identifiers(
        dns_server: DnsServer, resolver: dns.asyncresolver.Resolver) -> None:
    dns_server.add("_dmarc.eval.test", "TXT", "v=DMARC1; p=reject")
    raw = b"From: a@eval.test\r\n\r\nbody\r\n"
    verdict = await dmarc.evaluate(resolver, raw, [Identifier("spf", "temperror", "eval.test"),
                                                    Identifier("dkim", "pass", "other.test")])
    assert (verdict.result, verdict.policy, verdict.from_domain) == ("temperror", "reject", "eval.test")
    verdict = await dmarc.evaluate(resolver, raw, [Identifier("spf", "softfail", "eval.test")])
    assert verdict.result == "fail"
    verdict = await dmarc.evaluate(resolver, raw, [Identifier("dkim", "pass", "mail.eval.test")])
    assert verdict.result == "pass"


async def test_unreadable_record_is_a_permerror(dns_server: DnsServer, resolver: dns.asyncresolver.Resolver) -> None:
    dns_server.add("_dmarc.eval-bad.test", "TXT", "v=DMARC1; p=maybe")
    verdict = await dmarc.evaluate(resolver, b"From: a@eval-bad.test\r\n\r\n", [])
    assert (verdict.result, verdict.from_domain) == ("permerror", "eval-bad.test")
