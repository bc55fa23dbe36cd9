"""Is a webhook URL safe to call?  One check shared by the API and the webhooks service.

A webhook URL is chosen by an API user but called from inside the operator's
network, so it must not reach loopback, link-local (cloud metadata at
169.254.169.254), private, shared (CGNAT), multicast or reserved addresses
unless the operator allows it (``MAILGATE_WEBHOOKS_ALLOW_PRIVATE=true``, meant
for local development).  The API checks at create/update time; the webhooks
service checks again before every POST because DNS answers change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is malformed or points at an address webhooks may not reach."""


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def parse_host(url: str) -> str:
    """The host of an http(s) URL, or UnsafeUrl naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("credentials in the URL are not allowed; use custom headers")
    del port
    return parts.hostname


def check_addresses(host: str, addresses: list[IPAddress], allow_private: bool) -> None:
    if allow_private:
        return
    for address in addresses:
        if not is_public_address(address):
            raise UnsafeUrl(
                f"{host} resolves to {address}, a loopback, private, link-local or reserved "
                "address; webhooks may only reach public addresses "
                "(set MAILGATE_WEBHOOKS_ALLOW_PRIVATE=true to allow)"
            )


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url_static(url: str, allow_private: bool) -> str | None:
    """Checks that need no DNS; returns the host name still to resolve, if any."""
    host = parse_host(url)
    literal = literal_address(host)
    if literal is not None:
        check_addresses(host, [literal], allow_private)
        return None
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        check_addresses(host, [ipaddress.ip_address("127.0.0.1")], allow_private)
        return None
    return host


async def resolve(host: str) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeUrl(f"{host} does not resolve: {exc.strerror or exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_url(url: str, allow_private: bool) -> None:
    """Raise UnsafeUrl unless every address the URL's host resolves to may be called."""
    host = check_url_static(url, allow_private)
    if host is None or allow_private:
        return
    check_addresses(host, await resolve(host), allow_private)
