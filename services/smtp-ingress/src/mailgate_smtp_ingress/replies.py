"""SMTP replies, in one place so clients and tests see the same words every time.

aiosmtpd answers some errors itself, without enhanced status codes (RFC 3463)
or with codes that differ from ours; ``REWRITE`` maps those fixed texts to
what we advertise with ENHANCEDSTATUSCODES.
"""

from __future__ import annotations

from datetime import datetime

from mailgate_common import events

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
INTERNAL = "451 4.3.0 Internal error, message not queued, try again later"
RCPT_TEMPFAIL = "451 4.3.0 Temporary failure checking the recipient, try again later"
TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections, try again later"
BUSY = "451 4.3.1 Insufficient system resources for this message now, try again later"
ALL_SUPPRESSED = "550 5.7.1 Every recipient is on the suppression list"


def bad_address(reason: str) -> str:
    # ``reason`` quotes the address with repr(): never echo raw client bytes.
    return f"501 5.1.3 Bad address syntax: {reason}"


def suppressed(address: str) -> str:
    return f"550 5.7.1 <{address}> is on the suppression list"


def queued(queue_id: str, send_at: datetime) -> str:
    # EmailEngine's exact wording, which client libraries and scripts parse.
    return f"250 Message queued for delivery as {queue_id} ({events.iso(send_at)})"


REWRITE: dict[str, str] = {
    "552 Error: Too much mail data": TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "553 5.1.3 Error: malformed address": "501 5.1.3 Bad address syntax",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Syntax error",
    "500 Error: strict ASCII mode": "500 5.5.2 Syntax error: non-ASCII command",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "503 Error: send EHLO first": "503 5.5.1 Error: send EHLO first",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
    "501 Syntax: DATA": "501 5.5.4 Syntax: DATA",
    "501 Error: BODY can only be one of 7BIT, 8BITMIME":
        "501 5.5.4 BODY can only be one of 7BIT, 8BITMIME",
    "555 MAIL FROM parameters not recognized or not implemented":
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    "555 RCPT TO parameters not recognized or not implemented":
        "555 5.5.4 RCPT TO parameters not recognized or not implemented",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": "250 2.0.0 OK",
}


def rewrite(status: str) -> str:
    """Our wording for one of aiosmtpd's built-in replies (anything else unchanged)."""
    if status in REWRITE:
        return REWRITE[status]
    if status.startswith("501 Syntax: "):
        return "501 5.5.4 " + status[4:]
    if status.startswith('500 Error: command "'):
        return "500 5.5.1 " + status[11:]
    return status
