"""Is a webhook URL safe to call?  One check shared by the API and the webhooks service.

A webhook URL is chosen by an API user but called from inside the operator's
network, so it must not reach loopback, link-local (cloud metadata at
169.254.169.254), private, shared (CGNAT), multicast or reserved addresses
unless the operator allows it (``MAILGATE_WEBHOOKS_ALLOW_PRIVATE=true``, meant
for local development).  The API checks at create/update time.  The webhooks
service checks the addresses it actually connects to: its HTTP client resolves
through a resolver that applies :func:`check_addresses` to the one answer it
then uses, so a name that answers a public address to the check and a private
one to the connection (DNS rebinding) gets nowhere.

IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:0:0/96``,
IPv4-compatible ``::/96``, SIIT ``::ffff:0:0:0/96``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``) are judged by the IPv4 address they carry: on an IPv6-only
network with DNS64 every public host is reached through ``64:ff9b::/96``, so
refusing the prefix outright would refuse every webhook there, while
``64:ff9b::a00:1`` reaches 10.0.0.1 and must be refused.  The local-use NAT64
prefix ``64:ff9b:1::/48`` translates into the operator's own network and is
refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is malformed or points at an address webhooks may not reach."""


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 6145)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local use (RFC 8215)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one of the
    forms that reach an IPv4 host (mapped, compatible, SIIT, NAT64, 6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in (_IPV4_COMPATIBLE, _IPV4_TRANSLATED, _NAT64)):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (for an IPv6 form that
    carries an IPv4 address: when that IPv4 address is one)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        carried = embedded_ipv4(address)
        if carried is not None:
            address = carried
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


class PrivateHost(UnsafeUrl):
    """A mail server host that is not public, for an account limited to public ones."""


async def check_public_host(host: str) -> IPAddress:
    """The address to connect to, if the mail server ``host`` (a name or an address) is public.

    For accounts restricted to public SMTP/IMAP servers: checked when their
    settings are saved and again before connecting (DNS answers change);
    connecting to the address returned leaves DNS no second say.  Raises
    PrivateHost, or UnsafeUrl when the name does not resolve."""
    literal = literal_address(host)
    addresses = [literal] if literal is not None else await resolve(host)
    private = [a for a in addresses if not is_public_address(a)]
    if private or not addresses or host.lower() == "localhost" or host.lower().endswith(".localhost"):
        shown = private[0] if private else "loopback"
        raise PrivateHost(f"{host} is {shown}, a private, loopback or reserved address; this account may "
                          "only use public mail servers")
    return addresses[0]
