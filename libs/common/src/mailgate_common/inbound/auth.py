"""SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) verdicts for a received message.

CONTRACT (filled in by the auth work; other code imports these names as they are):
``Authenticator(resolver).check(raw, ip=, helo=, mail_from=) -> AuthResults``;
``AuthResults.as_payload()`` is the payload's ``auth`` object and what
``inbound_messages.auth`` stores; ``AuthResults.header(authserv_id)`` is the
value of the Authentication-Results header (RFC 8601) put on the stored copy.
``resolver_from_settings(settings)`` honours MAILGATE_DNS_SERVERS.

``check`` never raises: a lookup that cannot be answered now is a temperror,
and the whole check is bounded (CHECK_BUDGET) so a DATA reply never waits on DNS.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import authres  # type: ignore[import-untyped]
import authres.dmarc  # type: ignore[import-untyped]
import dns.asyncresolver

from mailgate_common.inbound import dmarc
from mailgate_common.inbound.dkim_check import check_dkim
from mailgate_common.inbound.resolver import resolver_from_settings
from mailgate_common.inbound.spf_check import check_spf

__all__ = [
    "AuthResults",
    "Authenticator",
    "DkimResult",
    "DmarcResult",
    "SpfResult",
    "parse_header",
    "resolver_from_settings",
]

log = logging.getLogger(__name__)

# Seconds for SPF, DKIM and DMARC together; past it every verdict still missing is a temperror.
CHECK_BUDGET = 10.0


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    domain: str | None = None  # the MAIL FROM domain (or the HELO name for a null sender)
    explanation: str | None = None
    identity: str = "mailfrom"  # mailfrom | helo: which identity ``domain`` is


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | none
    domain: str | None = None  # d=
    selector: str | None = None  # s=
    aligned: bool = False  # d= aligns with the From domain (relaxed, as DMARC)
    reason: str | None = None  # why it is not a pass (for the header's reason=)


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str | None = None  # p= (none | quarantine | reject) of the From domain
    from_domain: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AuthResults:
    spf: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult = field(default_factory=lambda: DmarcResult("none"))
    authserv_id: str = "localhost"

    def as_payload(self) -> dict[str, Any]:
        spf: dict[str, Any] = {"result": self.spf.result, "domain": self.spf.domain}
        if self.spf.explanation:
            spf["explanation"] = self.spf.explanation
        return {
            "spf": spf,
            "dkim": [{"result": item.result, "domain": item.domain, "selector": item.selector,
                      "aligned": item.aligned} for item in self.dkim],
            "dmarc": {"result": self.dmarc.result, "policy": self.dmarc.policy,
                      "fromDomain": self.dmarc.from_domain},
            "authenticationResults": self.header(),
        }

    def header(self, authserv_id: str | None = None) -> str:
        """The Authentication-Results value (no field name), e.g. ``mx.example.com; spf=pass ...``."""
        results: list[Any] = []
        if self.spf.identity == "helo":
            results.append(authres.SPFAuthenticationResult(result=self.spf.result, smtp_helo=self.spf.domain))
        else:
            results.append(authres.SPFAuthenticationResult(result=self.spf.result, smtp_mailfrom=self.spf.domain))
        for item in self.dkim or [DkimResult("none")]:
            results.append(authres.DKIMAuthenticationResult(
                result=item.result, reason=_reason(item.reason), header_d=item.domain, header_s=item.selector))
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=self.dmarc.result, reason=_reason(self.dmarc.reason), header_from=self.dmarc.from_domain,
            policy=self.dmarc.policy))
        value = authres.AuthenticationResultsHeader(
            authserv_id=_authserv(authserv_id or self.authserv_id), results=results).header_value()
        return str(value)

    def header_field(self, authserv_id: str | None = None) -> bytes:
        """The whole field, CRLF-ended, folded at spaces so lines keep to RFC 5322's 78 where they can."""
        lines: list[str] = []
        current = ""
        for word in f"Authentication-Results: {self.header(authserv_id)}".split(" "):
            if current and len(current) + 1 + len(word) > 78:
                lines.append(current)
                # The fold goes before the space, so unfolding (removing CRLF) gives the value back as it was.
                current = f" {word}"
            else:
                current = f"{current} {word}" if current else word
        lines.append(current)
        return ("\r\n".join(lines) + "\r\n").encode()


def _reason(text: str | None) -> str | None:
    # authres leaves a value holding "@" unquoted, and a reason is free text: keep it to safe characters.
    if not text:
        return None
    return re.sub(r"[^A-Za-z0-9 ._:=/,()-]", "", text)[:120].strip() or None


def _authserv(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "", value).strip(".")
    return cleaned or "localhost"


def parse_header(value: str) -> Any:
    """The authres object of an Authentication-Results value (with the DMARC method known)."""
    return authres.FeatureContext(authres.dmarc).parse_value(value)


class Authenticator:
    def __init__(self, resolver: dns.asyncresolver.Resolver, *, authserv_id: str = "localhost") -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id

    async def check(self, raw: bytes, *, ip: str, helo: str | None = None,
                    mail_from: str | None = None) -> AuthResults:
        """The verdicts for ``raw`` received from ``ip`` (``mail_from`` "" or None: the null sender)."""
        spf_task = asyncio.ensure_future(self._spf(ip, helo or "", mail_from or ""))
        dkim_task = asyncio.ensure_future(self._dkim(raw))
        policy_task = asyncio.ensure_future(self._policy(raw))
        tasks = {spf_task, dkim_task, policy_task}
        done, pending = await asyncio.wait(tasks, timeout=CHECK_BUDGET)
        for task in pending:
            task.cancel()
        if spf_task in done:
            spf = spf_task.result()
        else:
            _, identity, domain = _spf_identity(helo or "", mail_from or "")
            spf = SpfResult("temperror", domain, "SPF check timed out", identity)
        signatures = dkim_task.result() if dkim_task in done else [
            DkimResult("temperror", reason="DKIM check timed out")]
        if policy_task in done:
            policy = policy_task.result()
        else:
            domain, _ = dmarc.from_domain(raw)
            policy = dmarc.Policy(domain, verdict=dmarc.Verdict("temperror", None, domain, "DMARC lookup timed out"))
        identifiers = [dmarc.Identifier("spf", spf.result, spf.domain)]
        identifiers += [dmarc.Identifier("dkim", item.result, item.domain) for item in signatures]
        verdict = dmarc.decide(policy, identifiers)
        if verdict.result == "fail" and dkim_task not in done:
            verdict = dmarc.Verdict("temperror", verdict.policy, verdict.from_domain, "DKIM check timed out")
        dmarc_result = DmarcResult(verdict.result, verdict.policy, verdict.from_domain, verdict.reason)
        return AuthResults(spf, signatures, dmarc_result, self.authserv_id)

    async def _spf(self, ip: str, helo: str, mail_from: str) -> SpfResult:
        sender, identity, domain = _spf_identity(helo, mail_from)
        if not domain:
            return SpfResult("none", None, identity=identity)
        try:
            result, explanation = await check_spf(self.resolver, ip=ip, sender=sender, helo=helo or domain)
        except Exception as exc:
            log.exception("spf check failed")
            result, explanation = "temperror", f"SPF check failed: {type(exc).__name__}"
        return SpfResult(result, domain, explanation or None, identity)

    async def _dkim(self, raw: bytes) -> list[DkimResult]:
        try:
            verdicts = await check_dkim(self.resolver, raw)
        except Exception:
            log.exception("dkim check failed")
            return [DkimResult("temperror", reason="DKIM check failed")]
        from_domain, _ = dmarc.from_domain(raw)
        return [DkimResult(item.result, item.domain, item.selector, dmarc.aligned(item.domain, from_domain),
                           item.reason) for item in verdicts]

    async def _policy(self, raw: bytes) -> dmarc.Policy:
        try:
            return await dmarc.fetch_policy(self.resolver, raw)
        except Exception:
            log.exception("dmarc lookup failed")
            return dmarc.Policy(None, verdict=dmarc.Verdict("temperror", None, None, "DMARC check failed"))


def _spf_identity(helo: str, mail_from: str) -> tuple[str, str, str | None]:
    """(sender for pyspf, identity, domain checked): the MAIL FROM domain, or HELO for the null sender."""
    mail_from = mail_from.strip().strip("<>")
    if mail_from:
        domain = mail_from.rpartition("@")[2].lower().rstrip(".")
        return mail_from, "mailfrom", domain or None
    helo = helo.strip().lower().rstrip(".")
    if not helo or helo.startswith("["):
        return "", "helo", None
    return "", "helo", helo
