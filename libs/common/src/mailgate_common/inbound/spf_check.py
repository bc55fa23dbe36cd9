"""SPF (RFC 7208) with pyspf, asking our nameservers.

pyspf blocks and resolves through its module-level ``spf.DNSLookup``.  That
hook is replaced once, at import, by one that asks the resolver the current
thread was given, so each check uses MAILGATE_DNS_SERVERS while a lookup made
outside a check (no resolver set) still goes to pyspf's own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import dns.exception
import dns.resolver
import spf  # type: ignore[import-untyped]

from mailgate_common.inbound.resolver import blocking_twin

log = logging.getLogger(__name__)

# pyspf's budget for all the lookups of one check (RFC 7208 4.6.4 allows 20 s; DATA cannot wait that long).
SPF_QUERY_TIME = 6.0
RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})

_thread = threading.local()
_pyspf_lookup = spf.DNSLookup


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> list[tuple[tuple[str, str], Any]]:
    resolver: dns.resolver.Resolver | None = getattr(_thread, "resolver", None)
    if resolver is None:
        return _pyspf_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    found: list[tuple[tuple[str, str], Any]] = []
    try:
        answers = resolver.resolve(name, qtype, lifetime=min(float(timeout), resolver.lifetime), search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return found
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {type(exc).__name__}: {name} {qtype}") from exc
    # The shapes pyspf's own dnspython driver hands back.
    for rdata in answers:
        if qtype in ("A", "AAAA"):
            found.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            found.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            found.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            found.append(((name, qtype), rdata.strings))
    return found


spf.DNSLookup = _lookup


def _check_blocking(resolver: dns.resolver.Resolver, ip: str, sender: str, helo: str) -> tuple[str, str]:
    _thread.resolver = resolver
    try:
        result, explanation = spf.check2(i=ip, s=sender, h=helo, querytime=SPF_QUERY_TIME)
        return str(result), str(explanation or "")
    finally:
        _thread.resolver = None


async def check_spf(resolver: dns.resolver.BaseResolver, *, ip: str, sender: str, helo: str) -> tuple[str, str]:
    """(result, explanation) for ``sender`` (an address, "" for the null sender: HELO is checked)."""
    try:
        result, explanation = await asyncio.wait_for(
            asyncio.to_thread(_check_blocking, blocking_twin(resolver), ip, sender, helo),
            timeout=SPF_QUERY_TIME + 1)
    except TimeoutError:
        return "temperror", "SPF check timed out"
    except Exception as exc:  # pyspf raises on inputs it cannot read (a bad IP): the check has no verdict
        log.warning("spf check failed for %s from %s: %r", sender, ip, exc)
        return "permerror", f"SPF check failed: {exc}"
    if result not in RESULTS:
        return "permerror", explanation
    return result, explanation
