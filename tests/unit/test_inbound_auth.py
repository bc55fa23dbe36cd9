"""SPF, DKIM and DMARC verdicts of received mail, against a real DNS server; rspamd's answer mapping.

Every test publishes its own zone (a domain of its own under .test) in the
session's DNS server, signs its messages with a key made here, and reads the
verdicts as the MX door stores them: the payload's ``auth`` object and the
Authentication-Results header.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dkim  # type: ignore[import-untyped]
import dns.asyncresolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgate_common.inbound.auth import (
    Authenticator,
    AuthResults,
    DkimResult,
    DmarcResult,
    SpfResult,
    parse_header,
    resolver_from_settings,
)
from mailgate_common.inbound.resolver import parse_servers
from mailgate_common.inbound.spam import SpamChecker
from mailgate_common.settings import Settings
from tests.support.dns_server import DnsServer
from tests.support.stack import free_port

SENDER_IP = "192.0.2.10"
OTHER_IP = "198.51.100.7"


@dataclass(frozen=True)
class Key:
    private_pem: bytes
    record: str  # the DKIM key record to publish


@pytest.fixture(scope="module")
def key() -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")


@pytest.fixture(scope="module")
def resolver(dns_server: DnsServer) -> dns.asyncresolver.Resolver:
    return resolver_from_settings(Settings(dns_servers=dns_server.address))


@pytest.fixture(scope="module")
def authenticator(resolver: dns.asyncresolver.Resolver) -> Authenticator:
    return Authenticator(resolver, authserv_id="mx.mailgate.test")


def message(from_address: str, body: str = "Hello there.\r\n") -> bytes:
    return (f"From: Sender <{from_address}>\r\nTo: support@help.example.com\r\nSubject: Question\r\n"
            f"Message-ID: <1@{from_address.partition('@')[2]}>\r\n\r\n{body}").encode()


def signed(raw: bytes, domain: str, key: Key, selector: str = "sel") -> bytes:
    signature: bytes = dkim.sign(raw, selector.encode(), domain.encode(), key.private_pem,
                                 include_headers=[b"from", b"to", b"subject", b"message-id"])
    return signature + raw


def spf_of(results: AuthResults) -> tuple[str, str | None]:
    return results.spf.result, results.spf.domain


# SPF


@pytest.mark.parametrize(("record", "ip", "expected"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", SENDER_IP, "pass"),
    ("v=spf1 ip4:192.0.2.0/24 -all", OTHER_IP, "fail"),
    ("v=spf1 ip4:192.0.2.0/24 ~all", OTHER_IP, "softfail"),
    ("v=spf1 ip4:192.0.2.0/24 ?all", OTHER_IP, "neutral"),
    ("v=spf1 ip4:192.0.2.0/24 moo -all", SENDER_IP, "permerror"),
])
async def test_spf_verdict_follows_the_mail_from_domains_record(
        dns_server: DnsServer, authenticator: Authenticator, record: str, ip: str, expected: str) -> None:
    domain = f"spf-{expected}.test"
    dns_server.add(domain, "TXT", record)
    results = await authenticator.check(message(f"a@{domain}"), ip=ip, helo="mail.client.test",
                                        mail_from=f"bounces@{domain}")
    assert spf_of(results) == (expected, domain)
    assert results.as_payload()["spf"]["result"] == expected


async def test_spf_follows_include_and_a_mechanisms(dns_server: DnsServer, authenticator: Authenticator) -> None:
    dns_server.add("spf-include.test", "TXT", "v=spf1 include:_spf.provider-inc.test -all")
    dns_server.add("_spf.provider-inc.test", "TXT", "v=spf1 a:out.provider-inc.test -all")
    dns_server.add("out.provider-inc.test", "A", OTHER_IP)
    results = await authenticator.check(message("a@spf-include.test"), ip=OTHER_IP, helo="out.provider-inc.test",
                                        mail_from="a@spf-include.test")
    assert spf_of(results) == ("pass", "spf-include.test")


async def test_spf_is_none_without_a_record(authenticator: Authenticator) -> None:
    results = await authenticator.check(message("a@spf-unpublished.test"), ip=SENDER_IP, helo="client.test",
                                        mail_from="a@spf-unpublished.test")
    assert spf_of(results) == ("none", "spf-unpublished.test")
    assert "explanation" not in results.as_payload()["spf"]


async def test_null_sender_is_checked_against_the_helo_name(dns_server: DnsServer,
                                                             authenticator: Authenticator) -> None:
    dns_server.add("mta.spf-helo.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    results = await authenticator.check(message("mailer-daemon@spf-helo.test"), ip=SENDER_IP,
                                        helo="mta.spf-helo.test", mail_from="")
    assert spf_of(results) == ("pass", "mta.spf-helo.test")
    assert "smtp.helo=mta.spf-helo.test" in results.header()


# DKIM


async def test_signed_message_passes_dkim_and_aligns_with_from(dns_server: DnsServer, authenticator: Authenticator,
                                                               key: Key) -> None:
    dns_server.add("sel._domainkey.dkim-pass.test", "TXT", key.record)
    raw = signed(message("news@dkim-pass.test"), "dkim-pass.test", key)
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@elsewhere.test")
    assert results.as_payload()["dkim"] == [
        {"result": "pass", "domain": "dkim-pass.test", "selector": "sel", "aligned": True}]


async def test_tampered_body_fails_dkim(dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    dns_server.add("sel._domainkey.dkim-tampered.test", "TXT", key.record)
    raw = signed(message("news@dkim-tampered.test", "Pay 10 EUR.\r\n"), "dkim-tampered.test", key)
    results = await authenticator.check(raw.replace(b"10 EUR", b"99 EUR"), ip=OTHER_IP, helo="client.test",
                                        mail_from="x@dkim-tampered.test")
    assert [(item.result, item.domain) for item in results.dkim] == [("fail", "dkim-tampered.test")]


async def test_missing_key_is_a_permerror(authenticator: Authenticator, key: Key) -> None:
    raw = signed(message("news@dkim-nokey.test"), "dkim-nokey.test", key)
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@dkim-nokey.test")
    assert [(item.result, item.domain, item.selector) for item in results.dkim] == [
        ("permerror", "dkim-nokey.test", "sel")]


async def test_revoked_key_is_a_permerror(dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    dns_server.add("sel._domainkey.dkim-revoked.test", "TXT", "v=DKIM1; k=rsa; p=")
    raw = signed(message("news@dkim-revoked.test"), "dkim-revoked.test", key)
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@dkim-revoked.test")
    assert [item.result for item in results.dkim] == ["permerror"]


async def test_unreadable_signature_is_a_permerror_that_still_names_its_signer(
        authenticator: Authenticator, key: Key) -> None:
    raw = signed(message("news@dkim-badsig.test"), "dkim-badsig.test", key).replace(b"a=rsa-sha256", b"a=rsa-md5")
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@dkim-badsig.test")
    assert [(item.result, item.domain, item.selector) for item in results.dkim] == [
        ("permerror", "dkim-badsig.test", "sel")]
    assert "unknown signature algorithm" in (results.dkim[0].reason or "")


async def test_every_signature_is_verified_and_only_the_from_domains_aligns(
        dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    dns_server.add("sel._domainkey.dkim-multi.test", "TXT", key.record)
    dns_server.add("esp._domainkey.esp-multi.test", "TXT", key.record)
    raw = signed(signed(message("news@mail.dkim-multi.test"), "dkim-multi.test", key), "esp-multi.test", key, "esp")
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@esp-multi.test")
    assert [(item.result, item.domain, item.selector, item.aligned) for item in results.dkim] == [
        ("pass", "esp-multi.test", "esp", False), ("pass", "dkim-multi.test", "sel", True)]


async def test_unsigned_message_has_no_dkim_results(authenticator: Authenticator) -> None:
    results = await authenticator.check(message("a@unsigned.test"), ip=SENDER_IP, helo="client.test",
                                        mail_from="a@unsigned.test")
    assert results.as_payload()["dkim"] == []
    assert "dkim=none" in results.header()


# DMARC


async def test_dmarc_passes_on_aligned_dkim_even_when_spf_fails(
        dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    dns_server.add("dmarc-pass.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    dns_server.add("sel._domainkey.dmarc-pass.test", "TXT", key.record)
    dns_server.add("_dmarc.dmarc-pass.test", "TXT", "v=DMARC1; p=reject; rua=mailto:d@dmarc-pass.test")
    raw = signed(message("ceo@dmarc-pass.test"), "dmarc-pass.test", key)
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="ceo@dmarc-pass.test")
    assert results.spf.result == "fail"
    assert results.as_payload()["dmarc"] == {"result": "pass", "policy": "reject", "fromDomain": "dmarc-pass.test"}


async def test_dmarc_passes_on_aligned_spf_of_a_subdomain(dns_server: DnsServer,
                                                          authenticator: Authenticator) -> None:
    dns_server.add("bounce.dmarc-spf.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    dns_server.add("_dmarc.dmarc-spf.test", "TXT", "v=DMARC1; p=quarantine")
    results = await authenticator.check(message("ceo@dmarc-spf.test"), ip=SENDER_IP, helo="client.test",
                                        mail_from="b-123@bounce.dmarc-spf.test")
    assert (results.dmarc.result, results.dmarc.policy) == ("pass", "quarantine")


async def test_strict_spf_alignment_refuses_a_subdomain(dns_server: DnsServer, authenticator: Authenticator) -> None:
    dns_server.add("bounce.dmarc-strict.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    dns_server.add("_dmarc.dmarc-strict.test", "TXT", "v=DMARC1; p=reject; aspf=s")
    results = await authenticator.check(message("ceo@dmarc-strict.test"), ip=SENDER_IP, helo="client.test",
                                        mail_from="b@bounce.dmarc-strict.test")
    assert (results.spf.result, results.dmarc.result) == ("pass", "fail")


async def test_dmarc_fails_with_reject_when_nothing_aligns(
        dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    # SPF and DKIM both pass, but for the sender's own domain, not the one in From.
    dns_server.add("spoofer-fail.test", "TXT", f"v=spf1 ip4:{OTHER_IP} -all")
    dns_server.add("sel._domainkey.spoofer-fail.test", "TXT", key.record)
    dns_server.add("_dmarc.bank-fail.test", "TXT", "v=DMARC1; p=reject")
    raw = signed(message("security@bank-fail.test"), "spoofer-fail.test", key)
    results = await authenticator.check(raw, ip=OTHER_IP, helo="client.test", mail_from="x@spoofer-fail.test")
    assert results.spf.result == "pass"
    assert [(item.result, item.aligned) for item in results.dkim] == [("pass", False)]
    assert results.as_payload()["dmarc"] == {"result": "fail", "policy": "reject", "fromDomain": "bank-fail.test"}


async def test_dmarc_is_none_without_a_record(dns_server: DnsServer, authenticator: Authenticator) -> None:
    dns_server.add("dmarc-none.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    results = await authenticator.check(message("a@dmarc-none.test"), ip=SENDER_IP, helo="client.test",
                                        mail_from="a@dmarc-none.test")
    assert results.as_payload()["dmarc"] == {"result": "none", "policy": None, "fromDomain": "dmarc-none.test"}


async def test_message_without_from_is_a_dmarc_permerror(authenticator: Authenticator) -> None:
    raw = b"To: support@help.example.com\r\nSubject: no from\r\n\r\nbody\r\n"
    results = await authenticator.check(raw, ip=SENDER_IP, helo="client.test", mail_from="a@nofrom.test")
    assert (results.dmarc.result, results.dmarc.from_domain) == ("permerror", None)


# The header and the payload


async def test_authentication_results_header_parses_back(
        dns_server: DnsServer, authenticator: Authenticator, key: Key) -> None:
    dns_server.add("header.test", "TXT", f"v=spf1 ip4:{SENDER_IP} -all")
    dns_server.add("sel._domainkey.header.test", "TXT", key.record)
    dns_server.add("_dmarc.header.test", "TXT", "v=DMARC1; p=none")
    results = await authenticator.check(signed(message("a@header.test"), "header.test", key), ip=SENDER_IP,
                                        helo="client.test", mail_from="a@header.test")
    header = parse_header(results.header())
    assert header.authserv_id == "mx.mailgate.test"
    spf, dkim_result, dmarc = header.results
    assert (spf.method, spf.result, spf.smtp_mailfrom) == ("spf", "pass", "header.test")
    assert (dkim_result.method, dkim_result.result, dkim_result.header_d, dkim_result.header_s) == (
        "dkim", "pass", "header.test", "sel")
    assert (dmarc.method, dmarc.result, dmarc.header_from, dmarc.policy) == ("dmarc", "pass", "header.test", "none")
    assert results.as_payload()["authenticationResults"] == results.header()
    assert parse_header(results.header("other.example")).authserv_id == "other.example"


async def test_failure_reasons_keep_the_header_parseable(dns_server: DnsServer, authenticator: Authenticator,
                                                         key: Key) -> None:
    dns_server.add("_dmarc.reasons.test", "TXT", "v=DMARC1; p=reject")
    raw = signed(message("a@reasons.test"), "reasons.test", key, selector="gone")
    results = await authenticator.check(raw, ip=SENDER_IP, helo="client.test", mail_from="a@reasons.test")
    parsed = parse_header(results.header())
    assert [(item.method, item.result) for item in parsed.results] == [
        ("spf", "none"), ("dkim", "permerror"), ("dmarc", "fail")]
    assert parsed.results[1].reason


def test_header_field_is_folded_between_results() -> None:
    results = AuthResults(SpfResult("pass", "example.com"),
                          [DkimResult("pass", "example.com", "s2024", True),
                           DkimResult("permerror", "esp.example.net", "gone", reason="no key at gone._domainkey")],
                          DmarcResult("pass", "reject", "example.com"), "mx.example.org")
    field = results.header_field()
    assert field.endswith(b"\r\n")
    lines = field.decode().split("\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    unfolded = field.decode().replace("\r\n", "").removeprefix("Authentication-Results: ")
    assert unfolded == results.header()
    assert [(item.method, item.result) for item in parse_header(unfolded).results] == [
        ("spf", "pass"), ("dkim", "pass"), ("dkim", "permerror"), ("dmarc", "pass")]
    short = AuthResults(SpfResult("none")).header_field("mx.test")
    assert short == b"Authentication-Results: mx.test; spf=none; dkim=none; dmarc=none\r\n"


async def test_payload_is_json(authenticator: Authenticator) -> None:
    results = await authenticator.check(message("a@json.test"), ip=SENDER_IP, helo="client.test", mail_from="")
    assert json.loads(json.dumps(results.as_payload()))["spf"]["result"] == "none"


# DNS configuration and failures


async def test_resolver_honours_dns_servers_with_a_port(dns_server: DnsServer) -> None:
    dns_server.add("resolver-port.test", "A", "203.0.113.5")
    resolver = resolver_from_settings(Settings(dns_servers=f"127.0.0.1:{dns_server.port}"))
    answer = await resolver.resolve("resolver-port.test", "A")
    assert [rdata.to_text() for rdata in answer] == ["203.0.113.5"]
    assert [(server.address, server.port) for server in resolver.nameservers] == [  # type: ignore[union-attr]
        ("127.0.0.1", dns_server.port)]


def test_dns_servers_forms() -> None:
    assert parse_servers("10.0.0.2, 127.0.0.1:5353,[::1]:5300, ::1") == [
        ("10.0.0.2", 53), ("127.0.0.1", 5353), ("::1", 5300), ("::1", 53)]
    for bad in ("dns.example.com", "127.0.0.1:x", "127.0.0.1:70000", " , "):
        with pytest.raises(ValueError, match="MAILGATE_DNS_SERVERS"):
            parse_servers(bad)


def test_resolver_without_dns_servers_reads_the_system_configuration() -> None:
    resolver = resolver_from_settings(Settings())
    assert resolver.nameservers
    assert resolver.lifetime <= 5


async def test_unreachable_nameserver_gives_temperrors_not_exceptions(key: Key) -> None:
    # Nothing listens on this port: every lookup ends in a timeout, within the resolver's lifetime.
    authenticator = Authenticator(resolver_from_settings(Settings(dns_servers=f"127.0.0.1:{free_port()}")))
    raw = signed(message("a@down.test"), "down.test", key)
    results = await authenticator.check(raw, ip=SENDER_IP, helo="client.test", mail_from="a@down.test")
    assert (results.spf.result, [item.result for item in results.dkim], results.dmarc.result) == (
        "temperror", ["temperror"], "temperror")


async def test_unreadable_input_never_raises(authenticator: Authenticator) -> None:
    results = await authenticator.check(b"\x00\xff not a message", ip="not-an-ip", helo="", mail_from="<>")
    assert results.spf.result in ("none", "permerror")
    assert results.dmarc.result == "permerror"
    parse_header(results.header())


# rspamd


class _Rspamd(BaseHTTPRequestHandler):
    answer: Any = None
    status = 200
    seen: list[tuple[str, dict[str, list[str]], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        type(self).seen.append((self.path, headers, body))
        payload = json.dumps(self.answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def rspamd() -> Iterator[tuple[str, type[_Rspamd]]]:
    handler = type("Rspamd", (_Rspamd,), {"seen": [], "answer": None, "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


RSPAMD_SPAM = {
    "is_skipped": False, "score": 16.4, "required_score": 15.0, "action": "reject",
    "symbols": {
        "BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.1, "metric_score": 5.1, "description": "Spam by bayes",
                       "options": ["99.9%"]},
        "R_SPF_FAIL": {"name": "R_SPF_FAIL", "score": 1.0, "metric_score": 1.0},
        "MIME_GOOD": {"name": "MIME_GOOD", "score": -0.1},
    },
    "messages": {}, "message-id": "1@spam.test",
}


async def test_rspamd_verdict_and_the_envelope_it_is_given(rspamd: tuple[str, type[_Rspamd]]) -> None:
    url, server = rspamd
    server.answer = RSPAMD_SPAM
    raw = message("a@spam.test")
    spam = await SpamChecker(url).check(raw, ip=OTHER_IP, helo="client.test", mail_from="a@spam.test",
                                        recipients=["support@help.example.com", "sales@help.example.com"])
    assert spam == {
        "checked": True, "score": 16.4, "threshold": 15.0, "isSpam": True, "action": "reject",
        "symbols": [{"name": "BAYES_SPAM", "score": 5.1, "description": "Spam by bayes", "options": ["99.9%"]},
                    {"name": "R_SPF_FAIL", "score": 1.0}, {"name": "MIME_GOOD", "score": -0.1}],
    }
    path, headers, body = server.seen[0]
    assert (path, body) == ("/checkv2", raw)
    assert (headers["ip"], headers["helo"], headers["from"]) == ([OTHER_IP], ["client.test"], ["a@spam.test"])
    assert headers["rcpt"] == ["support@help.example.com", "sales@help.example.com"]


async def test_rspamd_ham(rspamd: tuple[str, type[_Rspamd]]) -> None:
    url, server = rspamd
    server.answer = {"is_skipped": False, "score": 0.4, "required_score": 15.0, "action": "no action", "symbols": {}}
    spam = await SpamChecker(url).check(b"x", ip=SENDER_IP)
    assert spam == {"checked": True, "score": 0.4, "threshold": 15.0, "isSpam": False, "action": "no action"}


async def test_rspamd_errors_leave_the_message_unchecked(rspamd: tuple[str, type[_Rspamd]]) -> None:
    url, server = rspamd
    server.status, server.answer = 500, {"error": "oops"}
    assert await SpamChecker(url).check(b"x", ip=SENDER_IP) == {
        "checked": False, "error": "rspamd answered HTTP 500"}
    down = await SpamChecker(f"http://127.0.0.1:{free_port()}").check(b"x", ip=SENDER_IP)
    assert down["checked"] is False and down["error"].startswith("rspamd unreachable")


async def test_without_rspamd_nothing_is_checked() -> None:
    checker = SpamChecker.from_settings(Settings())
    assert not checker.enabled
    assert await checker.check(b"x", ip=SENDER_IP) == {"checked": False}
