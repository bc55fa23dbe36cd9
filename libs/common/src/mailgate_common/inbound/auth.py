"""SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) verdicts for a received message.

CONTRACT (filled in by the auth work; other code imports these names as they are):
``Authenticator(resolver).check(raw, ip=, helo=, mail_from=) -> AuthResults``;
``AuthResults.as_payload()`` is the payload's ``auth`` object and what
``inbound_messages.auth`` stores; ``AuthResults.header(authserv_id)`` is the
value of the Authentication-Results header (RFC 8601) put on the stored copy.
``resolver_from_settings(settings)`` honours MAILGATE_DNS_SERVERS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    domain: str | None = None  # the MAIL FROM domain (or the HELO name for a null sender)
    explanation: str | None = None


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror | none
    domain: str | None = None  # d=
    selector: str | None = None  # s=
    aligned: bool = False  # d= aligns with the From domain (relaxed, as DMARC)


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    policy: str | None = None  # p= (none | quarantine | reject) of the From domain
    from_domain: str | None = None


@dataclass(frozen=True)
class AuthResults:
    spf: SpfResult
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: DmarcResult = field(default_factory=lambda: DmarcResult("none"))
    authserv_id: str = "localhost"

    def as_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def header(self, authserv_id: str | None = None) -> str:
        raise NotImplementedError
