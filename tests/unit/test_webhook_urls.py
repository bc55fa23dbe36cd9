"""The webhook URL safety check (pure parts, plus real DNS for literal names)."""

from __future__ import annotations

import asyncio

import pytest

from mailgate_common import urls

REFUSED = [
    "http://127.0.0.1/hooks",
    "http://127.8.9.10:8080/hooks",
    "http://localhost:3000/hooks",
    "http://api.localhost/hooks",
    "http://[::1]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/hooks",
    "http://10.0.0.1/hooks",
    "http://172.16.5.4/hooks",
    "http://192.168.1.1/hooks",
    "http://100.64.0.1/hooks",
    "http://0.0.0.0/hooks",
    "http://224.0.0.1/hooks",
    "http://[fc00::1]/hooks",
    # IPv6 forms that carry a non-public IPv4 address reach that address.
    "http://[::7f00:1]/hooks",  # IPv4-compatible ::/96 -> 127.0.0.1
    "http://[64:ff9b::7f00:1]/hooks",  # NAT64 -> 127.0.0.1
    "http://[64:ff9b::a00:1]/hooks",  # NAT64 -> 10.0.0.1
    "http://[2002:7f00:1::]/hooks",  # 6to4 -> 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/hooks",  # 6to4 -> 169.254.169.254
    "http://[::ffff:0:7f00:1]/hooks",  # SIIT ::ffff:0:0:0/96 -> 127.0.0.1
    "http://[64:ff9b:1::5db8:d70e]/hooks",  # local-use NAT64: the operator's own network
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_global_addresses_are_refused(url: str) -> None:
    with pytest.raises(urls.UnsafeUrl, match="MAILGATE_WEBHOOKS_ALLOW_PRIVATE"):
        asyncio.run(urls.check_url(url, allow_private=False))


@pytest.mark.parametrize("url", REFUSED)
def test_the_operator_can_allow_them(url: str) -> None:
    asyncio.run(urls.check_url(url, allow_private=True))


@pytest.mark.parametrize("url", [
    "http://93.184.215.14/hooks", "https://[2606:4700::1111]:8443/x",
    # On an IPv6-only network with DNS64, public hosts are reached through NAT64.
    "http://[64:ff9b::5db8:d70e]/hooks", "http://[2002:5db8:d70e::1]/hooks",
])
def test_public_addresses_pass(url: str) -> None:
    asyncio.run(urls.check_url(url, allow_private=False))


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/x", "http:// or https://"),
    ("example.com/hooks", "http:// or https://"),
    ("http:///hooks", "no host"),
    ("http://user:pw@93.184.215.14/", "credentials"),
    ("http://93.184.215.14:99999/", "not a valid URL"),
])
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str, message: str) -> None:
    with pytest.raises(urls.UnsafeUrl, match=message):
        asyncio.run(urls.check_url(url, allow_private=True))


def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(urls.UnsafeUrl, match="does not resolve"):
        asyncio.run(urls.check_url("http://no-such-host.invalid/hooks", allow_private=False))


def test_webhooks_go_through_the_operators_proxy_except_for_no_proxy_hosts() -> None:
    from mailgate_webhooks.http import Proxies

    proxies = Proxies({"https": "http://proxy.internal:3128", "no": "hooks.internal"})
    assert proxies.for_url("https://hooks.example.com/in") == "http://proxy.internal:3128"
    assert proxies.for_url("https://hooks.internal/in") is None
    assert proxies.for_url("http://hooks.example.com/in") is None  # no HTTP_PROXY set
    assert proxies.hosts() == {"proxy.internal"}
