"""Machine verdicts on opens and clicks, and the client address behind a proxy
(mailgate_common.tracking.machine), plus signed links across a secret rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailgate_common.tracking import machine
from mailgate_common.tracking.machine import Verdict, classify, client_address, trusted_networks
from mailgate_common.tracking.tokens import Signer

CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
SENT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "address", "agent", "expected"), [
    ("open", "203.0.113.9", CHROME, Verdict(False, None)),
    ("click", "203.0.113.9", CHROME, Verdict(False, None)),
    # Apple Mail Privacy Protection: Apple's network, or its proxy's bare user agent.
    ("open", "17.58.101.7", CHROME, Verdict(True, "apple_mpp")),
    ("open", "203.0.113.9", "Mozilla/5.0", Verdict(True, "apple_mpp")),
    ("open", "::ffff:17.1.2.3", None, Verdict(True, "apple_mpp")),
    ("click", "17.1.2.3", CHROME, Verdict(True, "apple_mpp")),
    ("click", "203.0.113.9", "Mozilla/5.0", Verdict(False, None)),  # the bare agent is MPP's pixel fetch only
    # Link scanners: clicks only.
    ("click", "40.107.22.5", CHROME, Verdict(True, "scanner_network")),
    ("click", "148.163.130.1", None, Verdict(True, "scanner_network")),
    ("click", "205.139.110.30", CHROME, Verdict(True, "scanner_network")),
    ("click", "64.235.150.1", CHROME, Verdict(True, "scanner_network")),
    ("open", "148.163.130.1", CHROME, Verdict(False, None)),
    # Image proxies: flagged, still opens a person made.
    ("open", "66.249.84.1", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
     Verdict(False, "image_proxy")),
    ("open", "203.0.113.9", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
     Verdict(False, "image_proxy")),
    ("open", "40.92.1.1", CHROME, Verdict(False, "image_proxy")),
    ("open", None, None, Verdict(False, None)),
    ("open", "not an address", CHROME, Verdict(False, None)),
])
def test_verdicts(kind: machine.Kind, address: str | None, agent: str | None, expected: Verdict) -> None:
    assert classify(kind, address=address, user_agent=agent) == expected


def test_head_is_a_machine() -> None:
    assert classify("click", address="203.0.113.9", user_agent=CHROME, method="HEAD") == Verdict(True, "head_request")


def test_prefetch_timing_counts_from_the_sent_time() -> None:
    def at(seconds: float, kind: machine.Kind = "click") -> Verdict:
        return classify(kind, address="203.0.113.9", user_agent=CHROME, sent_at=SENT,
                        now=SENT + timedelta(seconds=seconds), prefetch_seconds=5)

    assert at(0.5) == Verdict(True, "prefetch_timing")
    assert at(5, "open") == Verdict(True, "prefetch_timing")
    assert at(5.1) == Verdict(False, None)
    assert at(3600) == Verdict(False, None)
    # Not sent yet (no sent time), or the window off: no timing verdict.
    assert classify("open", address="203.0.113.9", user_agent=CHROME, sent_at=None, now=SENT,
                    prefetch_seconds=5) == Verdict(False, None)
    assert classify("open", address="203.0.113.9", user_agent=CHROME, sent_at=SENT, now=SENT,
                    prefetch_seconds=0) == Verdict(False, None)


def test_apple_wins_over_timing() -> None:
    assert classify("open", address="17.0.0.1", user_agent="Mozilla/5.0", sent_at=SENT, now=SENT,
                    prefetch_seconds=5) == Verdict(True, "apple_mpp")


def test_catalogue_is_documented_and_parses() -> None:
    assert machine.SCANNER_NETWORKS
    for network, operator, certainty in machine.SCANNER_NETWORKS:
        assert network.num_addresses > 1 and operator and certainty in ("high", "medium")
    assert machine.scanner(machine.parse_address("104.47.1.1")) is not None
    assert machine.scanner(machine.parse_address("8.8.8.8")) is None


TRUSTED = trusted_networks("127.0.0.1, 10.0.0.0/8,::1")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("198.51.100.7", None, "198.51.100.7"),
    # An untrusted peer's header is whatever the client wrote: ignored.
    ("198.51.100.7", "17.1.1.1", "198.51.100.7"),
    ("127.0.0.1", "17.1.1.1", "17.1.1.1"),
    ("127.0.0.1", "6.6.6.6, 17.1.1.1", "17.1.1.1"),  # the client can prepend anything; the proxy appends
    ("127.0.0.1", "17.1.1.1, 10.1.2.3", "17.1.1.1"),  # a chain of trusted proxies is walked back
    ("::1", " 2001:db8::5 ", "2001:db8::5"),
    ("127.0.0.1", "garbage", "127.0.0.1"),
    ("127.0.0.1", "10.0.0.2", "10.0.0.2"),  # only proxies: the farthest one
    (None, "17.1.1.1", None),
])
def test_client_address(peer: str | None, forwarded: str | None, expected: str | None) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("127.0.0.1", "17.1.1.1", trusted_networks(None)) == "127.0.0.1"
    assert trusted_networks("") == ()
    with pytest.raises(ValueError):
        trusted_networks("not-a-network")


def test_links_signed_before_a_rotation_still_verify() -> None:
    before = Signer("old-secret")
    data, sig = before.sign({"act": "click", "url": "https://e.example/"})
    after = Signer.from_settings("new-secret", "old-secret")
    assert after.verify(data, sig) == {"act": "click", "url": "https://e.example/"}
    retired = Signer.from_settings("newest", None, "new-secret, old-secret")
    assert retired.verify(data, sig) is not None
    assert Signer("new-secret").verify(data, sig) is None
    assert after.verify(data[:-2] + "xx", sig) is None
