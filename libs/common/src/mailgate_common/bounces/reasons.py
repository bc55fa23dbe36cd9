"""Classify a failed recipient into Sisimai's reason taxonomy and hard/soft.

The decision procedure mirrors Sisimai's reason.Find()/anotherone() (go-sisimai,
BSD 2-Clause, (C) azumakuniyuki and sisimai development team) so our reason names
mean what Sisimai users expect: explicit status codes first, checked against the
diagnostic text, then phrase matching, then coarse fall-backs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import lda, rhost
from .phrases import included_in

# RFC 3463 / IANA enhanced status code -> reason (Sisimai smtp/status Name()).
STATUS_REASON: dict[str, str] = {
    "2.1.5": "delivered",
    "4.1.6": "hasmoved",
    "4.1.7": "rejected",
    "4.1.8": "rejected",
    "4.1.9": "systemerror",
    "4.2.1": "blocked",
    "4.2.2": "mailboxfull",
    "4.2.3": "exceedlimit",
    "4.2.4": "filtered",
    "4.3.1": "systemfull",
    "4.3.2": "notaccept",
    "4.3.3": "systemerror",
    "4.3.5": "systemerror",
    "4.4.1": "expired",
    "4.4.2": "networkerror",
    "4.4.3": "systemerror",
    "4.4.4": "networkerror",
    "4.4.5": "systemfull",
    "4.4.6": "networkerror",
    "4.4.7": "expired",
    "4.4.8": "networkerror",
    "4.5.3": "systemerror",
    "4.5.5": "systemerror",
    "4.6.0": "contenterror",
    "4.6.2": "contenterror",
    "4.6.5": "contenterror",
    "4.7.1": "blocked",
    "4.7.2": "blocked",
    "4.7.5": "securityerror",
    "4.7.6": "securityerror",
    "4.7.7": "securityerror",
    "4.7.12": "securityerror",
    "4.7.15": "securityerror",
    "4.7.16": "mesgtoobig",
    "4.7.24": "authfailure",
    "4.7.25": "requireptr",
    "4.7.26": "authfailure",
    "5.1.0": "userunknown",
    "5.1.1": "userunknown",
    "5.1.2": "hostunknown",
    "5.1.3": "userunknown",
    "5.1.4": "filtered",
    "5.1.6": "hasmoved",
    "5.1.7": "rejected",
    "5.1.8": "rejected",
    "5.1.9": "systemerror",
    "5.1.10": "notaccept",
    "5.2.0": "filtered",
    "5.2.1": "filtered",
    "5.2.2": "mailboxfull",
    "5.2.3": "exceedlimit",
    "5.2.4": "filtered",
    "5.3.0": "systemerror",
    "5.3.1": "systemfull",
    "5.3.2": "notaccept",
    "5.3.3": "systemerror",
    "5.3.4": "mesgtoobig",
    "5.3.5": "systemerror",
    "5.4.0": "networkerror",
    "5.4.3": "systemerror",
    "5.4.4": "hostunknown",
    "5.5.2": "syntaxerror",
    "5.5.3": "toomanyconn",
    "5.5.4": "systemerror",
    "5.5.5": "systemerror",
    "5.5.6": "syntaxerror",
    **{f"5.6.{n}": "contenterror" for n in (0, 1, 2, 3, 5, 6, 7, 8, 9)},
    **{f"5.7.{n}": "securityerror" for n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 19)},
    "5.7.13": "suspend",
    "5.7.16": "mesgtoobig",
    "5.7.17": "hasmoved",
    "5.7.18": "hasmoved",
    "5.7.20": "authfailure",
    "5.7.21": "authfailure",
    "5.7.22": "authfailure",
    "5.7.23": "authfailure",
    "5.7.24": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    "5.7.27": "notaccept",
    "5.7.28": "spamdetected",
    "5.7.29": "authfailure",
    "5.7.30": "failedstarttls",
}

# Reasons a status code suggests only weakly: the text gets a chance to overrule them.
RETRY = frozenset(
    {
        "undefined",
        "onhold",
        "systemerror",
        "securityerror",
        "expired",
        "networkerror",
        "hostunknown",
        "userunknown",
    }
)
# Commands issued before DATA: a rejection there cannot be about the message content.
BEFORE_DATA = frozenset({"CONN", "EHLO", "HELO", "MAIL", "RCPT"})
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})

_COMMANDS = (
    "HELO",
    "EHLO",
    "STARTTLS",
    "AUTH PLAIN",
    "AUTH LOGIN",
    "AUTH CRAM-",
    "AUTH DIGEST-",
    "MAIL F",
    "RCPT",
    "RCPT T",
    "DATA",
    "QUIT",
    "XFORWARD",
)


def find_command(text: str | None) -> str:
    """The SMTP command a rejection answered, as quoted in the diagnostic ('' if none).

    Like Sisimai we keep the last command in protocol order, and ignore words that are
    only part of an address or host name (DATABASE@..., EMAIL.EXAMPLE.COM).
    """
    if not text:
        return ""
    found: list[str] = []
    if re.search(r"(?i)refused to talk to me|after initial connection", text):
        return "CONN"  # rejected in the greeting, before any command was sent
    if (
        re.search(
            # Not "Recipient address rejected": Postfix also answers so after DATA
            # (smtpd_data_restrictions), so like Sisimai we need the command itself.
            r"(?i)does not like recipient|unknown recipient|recipient unknown",
            text,
        )
        and "DATA" not in text
    ):
        found.append("RCPT")
    for token in _COMMANDS:
        pattern = (
            re.escape(token) if " " in token else rf"(?<![0-9A-Za-z@`]){token}(?![0-9A-Za-z@`])"
        )
        if not re.search(pattern, text):
            continue
        head = token[:4]
        head = {"STAR": "STARTTLS", "XFOR": "XFORWARD"}.get(head, head)
        if any(head.startswith(f[:4]) for f in found):
            continue
        found.append(head)
    return found[-1] if found else ""


def status_reason(status: str | None) -> str:
    return STATUS_REASON.get(status or "", "")


@dataclass
class Facts:
    """What we know about one failed recipient, as input to the classification."""

    diagnostic: str = ""
    status: str = ""
    reply_code: str = ""
    action: str = ""
    command: str = ""
    diagnostic_type: str = ""
    reason: str = ""  # a reason a family parser already knows for sure
    destination: str = ""  # domain part of the recipient address
    rhost: str = ""  # the remote server that refused the message
    lhost: str = ""  # the MTA that wrote the bounce
    notice: str = ""  # the whole human-readable notice (delivery agents write there)
    own_diagnostic: str = ""  # this recipient's Diagnostic-Code alone, without context


# Wording of specific MTAs (Exchange, qmail, Exim, OpenSMTPD, Domino, Gmail, Office 365,
# DragonFly, au/EZweb ...) whose meaning their authors documented. Like Sisimai's
# per-MTA decoder tables, these decide the reason before the generic phrase lists.
_FAMILY: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx, re.I))
    for name, rx in (
        (
            "userunknown",
            r"recipient name is not recognized|recipient not found by smtp address|"
            r"not listed in (?:domino directory|public name & address book)|"
            r"invalid final delivery userid|mailbox not found|"
            r"the email address wasn.t found at the destination|"
            r"no valid recipients for this mm|"  # Verizon MMS gateway (Sisimai lhost/verizon.go)
            # Exchange Online documents "5.4.1 Recipient address rejected: Access denied"
            # (directory based edge blocking) as "the recipient's address doesn't exist".
            r"5\.4\.1 recipient address rejected: access denied",
        ),
        (
            "notaccept",
            r"an mx or srv record indicated no smtp service|returned null mx|"
            r"doesn't receive email according to the administrator|"
            r"couldn't find a mail exchanger|no mx found for domain",
        ),
        (
            "networkerror",
            r"network error on destination mxs|dns query failed|"
            r"lookup of \S+ (?:responded with code nxdomain|had no relevant answers)",
        ),
        ("hostunknown", r"dns lookup failure: host \S+ not found|^no such domain"),
        ("blocked", r"my name was rejected"),
        (
            "systemerror",
            r"unable to contact ldap server|"
            r"unable to deliver message after multiple retries|"
            r"queue file write error|insufficient permission",
        ),
        ("suspend", r"account is disabled"),
        ("syntaxerror", r"malformed address"),
        (
            "expired",
            r"retry timeout exceeded|could not deliver for the last|envelope expired|"
            r"delivery failed \d+ attempts|message expired|"
            r"did not accept our requests to connect|not delivered within|"
            r"delivery time expired|host not reachable|could not find a gateway for",
        ),
    )
)


def family_reason(diagnostic: str) -> str:
    text = " ".join(diagnostic.split())
    for name, rx in _FAMILY:
        if rx.search(text):
            return name
    return ""


def _probe(name: str, f: Facts, text: str) -> bool:
    """Sisimai's per-reason ProbesInto(): status code and text together."""
    if f.reason == name:
        return True  # the bounce's own MTA said so (Sisimai: fo.Reason == this reason)
    named = status_reason(f.status)
    if name == "userunknown":
        if named == "userunknown":
            others = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept")
            return not any(included_in(o, text) for o in others)
        return f.command == "RCPT" and included_in("userunknown", text)
    if name == "filtered":
        if named == "filtered":
            return included_in("userunknown", text) or included_in("filtered", text)
        if f.command in BEFORE_DATA:
            return False
        return included_in("filtered", text) or included_in("userunknown", text)
    if name == "rejected":
        if named == "rejected":
            return True
        if f.command == "MAIL":
            return included_in("rejected", text)
        if f.command == "DATA" and named != "userunknown":
            return included_in("rejected", text)
        if named in ("", "undefined", "onhold", "securityerror", "systemerror"):
            return included_in("rejected", text)
        return False
    if name == "hostunknown":
        if named == "hostunknown":
            return not included_in("networkerror", text)
        return included_in("hostunknown", text)
    if name == "spamdetected":
        if not f.status:
            return False
        if named == "spamdetected":
            return True
        if f.command in BEFORE_DATA:
            return False
        return included_in("spamdetected", text)
    if name == "contenterror":
        if _probe("spamdetected", f, text):
            return False
        return named == "contenterror" or included_in("contenterror", text)
    if name == "mesgtoobig":
        if named == "mesgtoobig":
            return True
        if named == "exceedlimit" or f.status == "5.2.3":
            return False
        return included_in("mesgtoobig", text)
    if name == "suspend":
        return f.reply_code == "525" or included_in("suspend", text)
    if name == "norelaying":
        if f.command in ("CONN", "EHLO", "HELO"):
            return False
        return included_in("norelaying", text)
    if name in ("hasmoved", "notcompliantrfc", "badreputation", "speeding"):
        return included_in(name, text)
    # mailboxfull, exceedlimit, authfailure, requireptr, toomanyconn, blocked
    return named == name or included_in(name, text)


_ORDER_PROBE = (
    "mailboxfull",
    "mesgtoobig",
    "exceedlimit",
    "suspend",
    "hasmoved",
    "norelaying",
    "authfailure",
    "userunknown",
    "filtered",
    "requireptr",
    "notcompliantrfc",
    "badreputation",
    "contenterror",
    "rejected",
    "hostunknown",
    "spamdetected",
    "speeding",
    "toomanyconn",
    "blocked",
)
_ORDER_TEXT = (
    "mailboxfull",
    "authfailure",
    "badreputation",
    "speeding",
    "spamdetected",
    "virusdetected",
    "policyviolation",
    "norelaying",
    "systemerror",
    "networkerror",
    "suspend",
    "contenterror",
    "systemfull",
    "notaccept",
    "expired",
    "failedstarttls",
    "securityerror",
    "mailererror",
)


def _another(f: Facts, text: str) -> str:
    named = status_reason(f.status)
    if named in RETRY or not named or f.diagnostic_type != "SMTP":
        for name in _ORDER_TEXT:
            if included_in(name, text):
                return name
        if named:
            return named
        head = f.status[:3]
        if head in ("5.6", "4.6"):
            return "contenterror"
        if head in ("5.7", "4.7"):
            return "securityerror"
        if f.diagnostic_type.startswith("X-UNIX"):
            return "mailererror"
        if f.reply_code.isdigit() and (
            400 < int(f.reply_code) < 408 or 500 < int(f.reply_code) < 508
        ):
            return "syntaxerror"
        if f.action in ("delayed", "expired"):
            return "expired"
        if f.command in ("EHLO", "HELO", "CONN"):
            return "blocked"
    return named


def classify(f: Facts) -> str:
    if f.reason and f.reason not in RETRY:
        return f.reason
    family = family_reason(f.diagnostic)
    if family == "expired" and included_in("mailboxfull", f.diagnostic.lower()):
        # Exim: "mailbox is full: retry timeout exceeded" - the cause, not the give-up.
        family = "mailboxfull"
    if family and family not in RETRY:
        return family
    if f.status.startswith("2."):
        return "delivered"
    # Like Sisimai: a delivery agent's or a provider's own words come before the
    # generic phrase lists (they are more precise than any status code).
    local = lda.find(f.own_diagnostic, f.notice, f.command)
    if local:
        return local
    provider = rhost.provider(f.destination, f.rhost, f.lhost)
    if provider:
        answer = rhost.Answer(
            text=" ".join(f.diagnostic.lower().split()),
            status=f.status,
            reply_code=f.reply_code,
            command=f.command,
        )
        decided = rhost.find(provider, answer)
        if decided:
            return decided
    if family:
        return family
    text = " ".join(f.diagnostic.lower().split())
    reason = ""
    if f.diagnostic_type in ("SMTP", ""):
        for name in _ORDER_PROBE:
            if _probe(name, f, text):
                reason = name
                break
    if not reason or reason == "undefined":
        reason = _another(f, text)
        if reason == "undefined":
            reason = ""
        if not reason and f.action == "delayed":
            reason = "expired"
        if reason:
            return reason
        if included_in("vacation", text):
            return "vacation"
        return "onhold" if text else "undefined"
    return reason


def is_hard(reason: str, status: str | None, reply_code: int | None) -> bool:
    """Hard bounces are the ones worth suppressing the address for."""
    if reason not in HARD_REASONS:
        return False
    if status and status.startswith("4"):
        return False
    return not (reply_code and 400 <= reply_code < 500)
