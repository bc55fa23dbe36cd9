"""DMARC (RFC 7489): the From domain's policy record and the aligned SPF / DKIM verdict."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses

import dns.asyncresolver
from publicsuffixlist import PublicSuffixList

from mailgate_common.inbound.resolver import DnsTempError, txt

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class Record:
    policy: str  # p= (sp= when the record came from the organizational domain of a subdomain)
    adkim: str = "r"  # r | s
    aspf: str = "r"
    pct: int = 100


class RecordError(Exception):
    """The From domain publishes a DMARC record that cannot be read (permerror)."""


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """``mail.example.co.uk`` -> ``example.co.uk`` (a domain the list does not know stays as it is)."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str | None, from_domain: str | None, mode: str = "r") -> bool:
    if not domain or not from_domain:
        return False
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def from_domain(raw: bytes) -> tuple[str | None, str | None]:
    """(the RFC5322.From domain, None) or (None, why there is not exactly one)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    try:
        headers = BytesHeaderParser(policy=default_policy).parsebytes(raw[:end] if end >= 0 else raw)
        values = headers.get_all("From") or []
        if len(values) != 1:
            return None, "no From header" if not values else "several From headers"
        addresses = [address for _, address in getaddresses([str(values[0])]) if address]
    except Exception:  # the email package's header parsing can trip on hostile input
        return None, "From header not readable"
    if len(addresses) != 1:
        return None, "From names no single address"
    try:
        domain = Address(addr_spec=addresses[0]).domain
    except Exception:
        domain = addresses[0].rpartition("@")[2]
    domain = domain.strip().lower().rstrip(".")
    try:
        # An internationalized From domain is looked up, and compared, in its A-label form.
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None, "From domain is not a valid domain name"
    if not domain or "." not in domain:
        return None, "From address has no domain"
    return domain, None


def parse_record(text: str, *, subdomain: bool) -> Record:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v", "").upper() != "DMARC1":
        raise RecordError("not a DMARC1 record")
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # RFC 7489 6.6.3: a record with reporting but no usable p= is taken as p=none.
        if "rua" in tags:
            policy = "none"
        else:
            raise RecordError(f"bad p= {tags.get('p')!r}")
    if subdomain and tags.get("sp", "").lower() in POLICIES:
        policy = tags["sp"].lower()
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return Record(policy, adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r", pct)


def _dmarc_records(found: list[str] | None) -> list[str]:
    return [text for text in found or [] if text.strip().lower().startswith("v=dmarc1")]


async def lookup(resolver: dns.asyncresolver.Resolver, domain: str) -> Record | None:
    """The policy that governs ``domain``: its own record, else its organizational domain's.

    None when neither publishes exactly one record; DnsTempError, RecordError.
    """
    records = _dmarc_records(await txt(resolver, f"_dmarc.{domain}"))
    subdomain = False
    if not records:
        org = organizational_domain(domain)
        if org == domain:
            return None
        records = _dmarc_records(await txt(resolver, f"_dmarc.{org}"))
        subdomain = True
    if len(records) != 1:
        # RFC 7489 6.6.3: none, or more than one, is no policy.
        return None
    return parse_record(records[0], subdomain=subdomain)


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail | none | temperror | permerror
    policy: str | None
    from_domain: str | None
    reason: str | None = None


@dataclass(frozen=True)
class Identifier:
    """One authenticated (or not) domain DMARC can align: SPF's MAIL FROM or a DKIM d=."""

    method: str  # spf | dkim
    result: str
    domain: str | None


@dataclass(frozen=True)
class Policy:
    """What the From domain publishes; ``verdict`` is already known when there is nothing to align."""

    from_domain: str | None
    record: Record | None = None
    verdict: Verdict | None = None


async def fetch_policy(resolver: dns.asyncresolver.Resolver, raw: bytes) -> Policy:
    domain, problem = from_domain(raw)
    if domain is None:
        return Policy(None, verdict=Verdict("permerror", None, None, problem))
    try:
        record = await lookup(resolver, domain)
    except DnsTempError as exc:
        return Policy(domain, verdict=Verdict("temperror", None, domain, str(exc)))
    except RecordError as exc:
        return Policy(domain, verdict=Verdict("permerror", None, domain, str(exc)))
    if record is None:
        return Policy(domain, verdict=Verdict("none", None, domain))
    return Policy(domain, record)


def decide(policy: Policy, identifiers: Sequence[Identifier]) -> Verdict:
    if policy.verdict is not None or policy.record is None:
        return policy.verdict or Verdict("none", None, policy.from_domain)
    record, domain = policy.record, policy.from_domain

    def mode(method: str) -> str:
        return record.aspf if method == "spf" else record.adkim

    candidates = [item for item in identifiers if aligned(item.domain, domain, mode(item.method))]
    if any(item.result == "pass" for item in candidates):
        return Verdict("pass", record.policy, domain)
    if any(item.result == "temperror" for item in candidates):
        # An aligned identifier could not be checked now: the verdict may still turn to pass.
        return Verdict("temperror", record.policy, domain, "aligned identifier had a temporary error")
    return Verdict("fail", record.policy, domain, "no aligned SPF or DKIM pass")


async def evaluate(resolver: dns.asyncresolver.Resolver, raw: bytes, identifiers: Sequence[Identifier]) -> Verdict:
    return decide(await fetch_policy(resolver, raw), identifiers)
