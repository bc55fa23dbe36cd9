"""What an SMTP exchange meant: sent, try again later, give up, or cannot tell.  Pure logic."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

from mailgate_common.text import clean_text

# "unknown": the whole message was written and no verdict came back (timeout,
# connection lost): the server may have delivered it.
Kind = Literal["sent", "temporary", "permanent", "unknown"]
ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# Characters of an exception's text kept in an outcome (it may quote the server).
ERROR_TEXT_LIMIT = 4096


class OutcomeUnknown(aiosmtplib.SMTPException):
    """No reply to the end of the message: it may or may not have been accepted."""


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    response: str  # the server's whole reply line(s), or our description of the failure
    code: int | None = None
    status: str | None = None  # enhanced status code, e.g. "5.1.1"
    command: str | None = None
    error_code: str | None = None  # EmailEngine-style: EENVELOPE, EMESSAGE, ECONNECTION, ...
    refused: dict[str, str] = field(default_factory=dict)
    # Whether the connection logged in; None when no connection got that far.
    authenticated: bool | None = None

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
    # aiosmtplib reads replies with surrogateescape: its texts may hold any byte.
    if isinstance(exc, OutcomeUnknown):
        return Outcome("unknown", f"No reply after the message was sent: {_text(exc)}", command="DATA",
                       error_code="EUNKNOWNOUTCOME")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return classify_reply(exc.code, clean_text(exc.message, ERROR_TEXT_LIMIT), "AUTH")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
        return classify_reply(exc.code, clean_text(exc.message, ERROR_TEXT_LIMIT), command)
    if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return Outcome("temporary", f"Timeout: {_text(exc)}", command=command, error_code="ETIMEDOUT")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return Outcome("temporary", f"Connection error: {_text(exc)}", command=command,
                       error_code="ECONNECTION")
    return Outcome("temporary", f"Unexpected error: {_text(exc, repr)}", command=command, error_code="EUNKNOWN")


def _text(exc: BaseException, show: Callable[[object], str] = str) -> str:
    return clean_text(show(exc), ERROR_TEXT_LIMIT)
