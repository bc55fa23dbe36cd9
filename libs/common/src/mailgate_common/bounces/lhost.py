"""Reasons that only the MTA which wrote the bounce can tell (per-MTA decoders).

Some MTAs explain the failure in their own vocabulary: au/EZweb's "The user(s)
account is disabled.", Gmail's "(state 15)" codes, iMail's "Unknown user:" lines,
PowerMTA's X-PowerMTA-BounceCategory. We recognise the MTA from the headers of the
bounce and read its vocabulary, like Sisimai's lhost/*.go decoders (go-sisimai and
p5-sisimai, BSD 2-Clause License, Copyright (C) 2014-2025 azumakuniyuki and sisimai
development team).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from .mime import header_text


@dataclass(frozen=True)
class Origin:
    """The MTA that wrote the bounce, as far as its headers tell."""

    name: str = ""
    # au/EZweb marks messages refused by the recipient's reception filter.
    spam_filtered: bool = False


@dataclass(frozen=True)
class Verdict:
    reason: str = ""
    command: str = ""
    # The MTA's own wording is more precise than any status code it may carry (qmail's
    # "#4.4.1" says "gave up", its text says why): no generic rule gets to overrule it.
    final: bool = False


def identify(msg: Message) -> Origin:
    sender = header_text(msg, "From")
    subject = header_text(msg, "Subject")
    mailer = header_text(msg, "X-Mailer")
    if _is_ezweb(msg, sender, subject):
        return Origin("EZweb", spam_filtered=header_text(msg, "X-SPASIGN").upper() == "NG")
    if "<mailer-daemon@googlemail.com>" in sender.lower() and "Delivery Status Notification" in subject:
        return Origin("Gmail")
    if subject.startswith("Undeliverable Mail ") or mailer.startswith("<SMTP32 v"):
        return Origin("IMailServer")
    if msg.get("X-Msg-Ref") is not None and "MAILER-DAEMON@messagelabs.com" in sender:
        return Origin("MessageLabs")
    if "InterScan" in sender or "InterScan" in str(msg.get("Content-Type", "")):
        return Origin("InterScanMSS")
    # qmail-send titles its bounces "failure notice" and stamps "(qmail NNN invoked ...)"
    # Received headers; qmail clones that do neither word their notices their own way.
    if subject in ("failure notice", "Failure Notice") or any(
        "(qmail " in str(r) for r in msg.get_all("Received") or []
    ):
        return Origin("qmail")
    return Origin()


def _is_ezweb(msg: Message, sender: str, subject: str) -> bool:
    # No single header is proof; two independent ones are (as in Sisimai's decoder).
    votes = 0
    votes += any(p in sender for p in ("Postmaster@ezweb.ne.jp", "Postmaster@au.com"))
    votes += subject == "Mail System Error - Returned Mail"
    votes += any(
        "ezweb.ne.jp (EZweb Mail) with" in str(r) or ".au.com (" in str(r)
        for r in msg.get_all("Received") or []
    )
    message_id = header_text(msg, "Message-ID")
    votes += ".ezweb.ne.jp>" in message_id or ".au.com>" in message_id
    return votes >= 2


_EZWEB: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("expired", ("Your message was not delivered within ",)),
    ("mailboxfull", ("The user(s) account is temporarily over quota",)),
    ("suspend", ("The user(s) account is disabled.", "The user(s) account is temporarily limited.")),
    ("onhold", ("Each of the following recipients was rejected by a remote mail server",)),
)

# Gmail's "(state N)": the SMTP stage at which the remote server refused, and what it means.
_GMAIL_STATES: dict[str, tuple[str, str]] = {
    "6": ("MAIL", "failedstarttls"),
    "8": ("AUTH", "systemerror"),
    "9": ("AUTH", "failedstarttls"),
    "12": ("AUTH", "norelaying"),
    "13": ("EHLO", "blocked"),
    "14": ("RCPT", "userunknown"),
    "15": ("DATA", "filtered"),
    "17": ("DATA", "filtered"),
    "18": ("DATA", "filtered"),
}
_GMAIL: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "expired",
        (
            "DNS Error: Could not contact DNS servers",
            "Delivery to the following recipient has been delayed",
            "The recipient server did not accept our requests to connect",
        ),
    ),
    ("hostunknown", ("DNS Error: Domain name not found", "DNS Error: DNS server returned answer with no data")),
)

_IMAIL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hostunknown", ("Unknown host",)),
    ("userunknown", ("Unknown user", "Invalid final delivery userid")),
    ("mailboxfull", ("User mailbox exceeds allowed size",)),
    ("virusdetected", ("Requested action not taken: virus detected",)),
    ("spamdetected", ("Blacklisted URL in message",)),
    ("expired", ("Delivery failed ",)),
)

# qmail-remote's own words (qmail-remote.c) for a delivery it gave up on: the SMTP
# connection never got anywhere, which is a network problem rather than a timeout.
_QMAIL: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "networkerror",
        (
            "Sorry, I wasn't able to establish an SMTP connection",
            "Sorry. Although I'm listed as a best-preference MX or A for that host",
        ),
    ),
)

# Symantec Email Security.cloud answers "542 <addr> Rejected" for unknown recipients.
_MESSAGELABS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("userunknown", ("542 ", " Rejected", "No such user")),
    ("securityerror", ("Please turn on SMTP Authentication in your mail client",)),
)

# PowerMTA's X-PowerMTA-BounceCategory (its own classification of the remote answer).
POWERMTA_CATEGORIES: dict[str, str] = {
    "bad-domain": "hostunknown",
    "bad-mailbox": "userunknown",
    "inactive-mailbox": "suspend",
    "message-expired": "expired",
    "no-answer-from-host": "networkerror",
    "policy-related": "policyviolation",
    "quota-issues": "mailboxfull",
    "routing-errors": "systemerror",
    "spam-related": "spamdetected",
}


def _first(table: tuple[tuple[str, tuple[str, ...]], ...], text: str) -> str:
    return next((reason for reason, phrases in table if any(p in text for p in phrases)), "")


def decide(origin: Origin, evidence: str, notice: str, status: str) -> Verdict:
    """The reason (and SMTP command) the bounce's own MTA gives for one recipient."""
    if origin.name == "EZweb":
        if origin.spam_filtered:
            return Verdict("filtered")
        return Verdict(_first(_EZWEB, " ".join(notice.split())))
    if origin.name == "Gmail":
        text = " ".join(evidence.split())
        m = re.search(r" \(state (\d+)\)", text)
        if m and m.group(1) in _GMAIL_STATES:
            command, reason = _GMAIL_STATES[m.group(1)]
            if status and ".0" not in status:
                return Verdict("", command)  # a specific status code names the reason itself
            return Verdict(reason, command)
        return Verdict(_first(_GMAIL, text))
    if origin.name == "MessageLabs":
        return Verdict(_first(_MESSAGELABS, " ".join(evidence.split())))
    if origin.name == "InterScanMSS":
        # Trend Micro's only failure text: "Unable to deliver message to <addr>".
        return Verdict("userunknown" if "Unable to deliver" in evidence else "")
    if origin.name == "qmail":
        reason = _first(_QMAIL, " ".join(evidence.split()))
        return Verdict(reason, final=bool(reason))
    if origin.name == "IMailServer":
        return Verdict(_first(_IMAIL, " ".join(evidence.split())))
    return Verdict()
