"""The DNS resolver behind the SPF, DKIM and DMARC checks of received mail.

MAILGATE_DNS_SERVERS ("ip", "ip:port" or "[ipv6]:port", comma-separated) names
the nameservers; unset, the system's /etc/resolv.conf is read.  The timeouts are
short on purpose: the checks run while a client waits for its DATA reply, so a
slow zone must end in a temperror, never in a stalled transaction.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

# Seconds one nameserver is given for a try, and for a whole query (all tries).
TRY_TIMEOUT = 2.0
QUERY_LIFETIME = 4.0


class SettingsLike(Protocol):
    @property
    def dns_servers(self) -> str | None: ...


class DnsTempError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no nameserver answered)."""


def parse_servers(value: str) -> list[tuple[str, int]]:
    """``"10.0.0.2, 127.0.0.1:5353, [::1]:53, ::1"`` -> [(address, port), ...]."""
    servers: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"MAILGATE_DNS_SERVERS: bad nameserver {item!r}")
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            if not port_text.isdigit():
                raise ValueError(f"MAILGATE_DNS_SERVERS: bad port in {item!r}")
            port = int(port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"MAILGATE_DNS_SERVERS: {item!r} is not an IP address") from None
        if not 0 < port < 65536:
            raise ValueError(f"MAILGATE_DNS_SERVERS: bad port in {item!r}")
        servers.append((host, port))
    if not servers:
        raise ValueError("MAILGATE_DNS_SERVERS names no nameserver")
    return servers


def _configure(resolver: dns.resolver.BaseResolver, servers: list[tuple[str, int]] | None) -> None:
    if servers is not None:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    resolver.timeout = TRY_TIMEOUT
    resolver.lifetime = QUERY_LIFETIME
    resolver.cache = dns.resolver.LRUCache(1000)


def resolver_from_settings(settings: SettingsLike) -> dns.asyncresolver.Resolver:
    if settings.dns_servers:
        servers = parse_servers(settings.dns_servers)
        resolver = dns.asyncresolver.Resolver(configure=False)
        _configure(resolver, servers)
    else:
        resolver = dns.asyncresolver.Resolver()
        _configure(resolver, None)
    return resolver


def blocking_twin(resolver: dns.resolver.BaseResolver) -> dns.resolver.Resolver:
    """A blocking resolver asking the same nameservers (for pyspf, which runs in a thread)."""
    twin = dns.resolver.Resolver(configure=False)
    twin.nameservers = list(resolver.nameservers)
    twin.timeout, twin.lifetime = resolver.timeout, resolver.lifetime
    twin.cache = resolver.cache
    return twin


async def txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[str] | None:
    """The TXT strings at ``name`` (each record's strings joined), None when there are none.

    Raises DnsTempError when the nameservers cannot answer now.
    """
    try:
        answer = await resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as exc:
        raise DnsTempError(f"{name}: {type(exc).__name__}") from exc
    except dns.exception.DNSException as exc:
        # A malformed name (too long, empty label) cannot have a record.
        if isinstance(exc, dns.name.NameTooLong | dns.name.EmptyLabel | dns.name.LabelTooLong):
            return None
        raise DnsTempError(f"{name}: {type(exc).__name__}") from exc
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
