"""What an SMTP exchange meant: sent, try again later, or give up.  Pure logic."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

Kind = Literal["sent", "temporary", "permanent"]
ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    response: str  # the server's whole reply line(s), or our description of the failure
    code: int | None = None
    status: str | None = None  # enhanced status code, e.g. "5.1.1"
    command: str | None = None
    error_code: str | None = None  # EmailEngine-style: EENVELOPE, EMESSAGE, ECONNECTION, ...
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return self.response


def enhanced_status(message: str) -> str | None:
    found = ENHANCED.match(message.strip())
    return found.group(0) if found else None


def classify_reply(code: int, message: str, command: str | None) -> Outcome:
    status = enhanced_status(message)
    line = f"{code} {message}".strip()
    if 200 <= code < 300:
        return Outcome("sent", line, code, status, command)
    # 503 is "bad sequence" (usually our pipelining state), and a 4.x.x enhanced
    # code under a 5xx reply is the server saying "temporary" - both retry.
    temporary = code < 500 or code == 503 or (status is not None and status.startswith("4."))
    error_code = {"MAIL FROM": "EENVELOPE", "RCPT TO": "EENVELOPE", "DATA": "EMESSAGE"}.get(
        command or "", "EPROTOCOL"
    )
    if command == "AUTH":
        error_code = "EAUTH"
    return Outcome("temporary" if temporary else "permanent", line, code, status, command, error_code)


def classify_exception(exc: BaseException, command: str | None) -> Outcome:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        outcome = classify_reply(first.code, first.message, "RCPT TO")
        refused = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
        return Outcome(outcome.kind, outcome.response, outcome.code, outcome.status,
                       "RCPT TO", "EENVELOPE", refused)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return classify_reply(exc.code, exc.message, "AUTH")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
        return classify_reply(exc.code, exc.message, command)
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return Outcome("temporary", f"Timeout: {exc}", command=command, error_code="ETIMEDOUT")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return Outcome("temporary", f"Connection error: {exc}", command=command,
                       error_code="ECONNECTION")
    return Outcome("temporary", f"Unexpected error: {exc!r}", command=command, error_code="EUNKNOWN")
