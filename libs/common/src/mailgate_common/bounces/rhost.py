"""Reasons decided by who refused the message: per-provider error code tables.

Big mailbox providers document their own error codes ("AUP#CDRBL", "LPN007_416",
"IB607", "RCP-P2") and phrases, which mean something more precise than the generic
phrase lists. This is a port of Sisimai's rhost/*.go modules (go-sisimai, BSD 2-Clause
License, Copyright (C) 2014-2025 azumakuniyuki and sisimai development team): a
provider is recognised by the recipient's domain, the remote host or the local host,
then its own table decides the reason before the generic classification runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Provider -> host name suffixes (Sisimai rhost.RhostClass).
CLASSES: dict[str, tuple[str, ...]] = {
    "Aol": (".mail.aol.com", ".mx.aol.com"),
    "Cox": ("cox.net",),
    "Facebook": (".facebook.com",),
    "FrancePTT": (".laposte.net", ".orange.fr", ".wanadoo.fr"),
    "GoDaddy": ("smtp.secureserver.net", "mailstore1.secureserver.net"),
    "GSuite": ("googlemail.com",),
    "KDDI": (".ezweb.ne.jp", "msmx.au.com"),
    "MessageLabs": (".messagelabs.com",),
    "Mimecast": (".mimecast.com",),
    "NTTDOCOMO": ("mfsmax.docomo.ne.jp",),
    "Outlook": (".hotmail.com",),
    "Spectrum": ("charter.net",),
    "YahooInc": (".yahoodns.net",),
    "Zoho": (".zoho.com",),
}


@dataclass
class Answer:
    """What the provider tables look at: the server's words and codes."""

    text: str  # lower-cased diagnostic
    status: str = ""
    reply_code: str = ""
    command: str = ""


def provider(destination: str, rhost: str, lhost: str) -> str:
    """The provider class, trying the recipient's domain, then the remote, then the local host.

    Like Sisimai, a recipient domain matches when a listed name ends with it (so the
    domain "cox.net" or "docomo.ne.jp" selects its provider), host names when they end
    with a listed suffix.
    """
    domain = destination.lower().strip(".")
    if domain:
        for name, suffixes in CLASSES.items():
            if any(s.endswith(domain) and (len(s) == len(domain) or s[-len(domain) - 1] == ".") for s in suffixes):
                return name
    for host in (rhost.lower().strip("."), lhost.lower().strip(".")):
        if not host:
            continue
        for name, suffixes in CLASSES.items():
            if any(host.endswith(s) or host == s.lstrip(".") for s in suffixes):
                return name
    return ""


def _first(table: dict[str, tuple[str, ...]], text: str) -> str:
    for reason, phrases in table.items():
        if any(p in text for p in phrases):
            return reason
    return ""


def _aol(a: Answer) -> str:
    return _first(
        {
            "hostunknown": ("host or domain name not found",),
            "notaccept": ("type=mx: malformed or unexpected name server reply",),
        },
        a.text,
    )


_COX_CODES: dict[str, str] = {
    "cxbl": "blocked",
    "cxdns": "requireptr",
    "cxsndr": "authfailure",
    "cxsmtp": "rejected",
    "cxcnct": "toomanyconn",
    "cxmxrt": "toomanyconn",
    "cdrbl": "blocked",
    "cxthrt": "securityerror",
    "cxmj": "securityerror",
    **{f"ipbl{c}": "blocked" for c in ("0001", "0010", "0100", "0011", "0101", "0110", "0111")},
    **{f"ipbl{c}": "blocked" for c in ("1000", "1001", "1010", "1011", "1100", "1101", "1110", "1111")},
    "ipbl00001": "blocked",
    **{f"urlbl{c}": "spamdetected" for c in ("011", "101", "110", "1001")},
}


def _cox(a: Answer) -> str:
    m = re.search(r"aup#(\S+)", a.text)
    if m and m.group(1) in _COX_CODES:
        return _COX_CODES[m.group(1)]
    return _first(
        {
            "blocked": ("cox too many bad commands from", "too many invalid recipients"),
            "requireptr": ("dns check failure - try again later", "rejected - no rdns"),
            "policyviolation": ("esmtp no data before greeting", "attachment extension is forbidden"),
            "rejected": ("sender rejected",),
            "systemerror": ("esmtp server temporarily not available",),
            "toomanyconn": (
                "too many sessions from",
                "requested action aborted: try again later",
                "message threshold exceeded",
            ),
            "userunknown": ("recipient rejected",),
        },
        a.text,
    )


_FACEBOOK: dict[str, tuple[str, ...]] = {
    "authfailure": ("pol-p7",),
    "blocked": ("pol-p1", "pol-p2", "pol-p3", "pol-p4", "pol-t1", "pol-t2", "pol-t3"),
    "contenterror": ("msg-p2",),
    "filtered": ("rcp-p2", "rcp-p3"),
    "mesgtoobig": ("msg-p1", "int-p2"),
    "notcompliantrfc": ("msg-p3",),
    "rejected": ("dns-p1", "dns-p2", "dns-t1"),
    "requireptr": ("dns-p3", "dns-t2"),
    "spamdetected": ("pol-p6",),
    "suspend": ("rcp-t4",),
    "systemerror": ("rcp-t1",),
    "toomanyconn": ("con-t1", "con-t2", "con-t3", "con-t4", "msg-t1"),
    "userunknown": ("rcp-p1", "int-p1", "int-p3", "int-p4"),
    "virusdetected": ("pol-p5",),
}


def _facebook(a: Answer) -> str:
    # Facebook's response codes look like "RCP-P2" (category, P=permanent/T=temporary, n).
    m = re.search(r"\b([a-z]{3}-[pt]\d)\b", a.text)
    if m is None:
        return ""
    return next((r for r, codes in _FACEBOOK.items() if m.group(1) in codes), "")


_FRANCEPTT: dict[str, str] = {
    "101": "blocked",
    "102": "blocked",
    "103": "blocked",
    "104": "toomanyconn",
    "305": "securityerror",
    "401": "authfailure",
    "402": "securityerror",
    "403": "rejected",
    "405": "rejected",
    "415": "rejected",
    "416": "userunknown",
    "417": "mailboxfull",
    "420": "suspend",
    "421": "rejected",
    "426": "suspend",
    "505": "systemerror",
    "506": "spamdetected",
    "510": "blocked",
    "514": "mesgtoobig",
    "517": "authfailure",
    "630": "policyviolation",
    "999": "blocked",
}


def _franceptt(a: Answer) -> str:
    # Orange and La Poste end their answers with a label like "LPN007_416" or "OFR_506":
    # the last three digits are a documented error number.
    text = a.text.replace("_", "-")
    for label in ("lpn", "ofr", "ouk"):
        at = text.rfind(label)
        if at < 0:
            continue
        token = text[at + len(label) :].split(" ", 1)[0]
        m = re.search(r"(\d{3})\W*$", token)
        if m:
            return _FRANCEPTT.get(m.group(1), "")
        break
    if "spf/dns de votre nom de domaine" in a.text:
        return "authfailure"
    return ""


_GODADDY: dict[str, str] = {
    "ib401": "securityerror",
    "ib501": "notcompliantrfc",
    "ib502": "notcompliantrfc",
    "ib506": "rejected",
    "ib508": "authfailure",
    "ib108": "requireptr",
    "ib212": "spamdetected",
    "ib705": "virusdetected",
    "ib605": "toomanyconn",
    "ib007": "toomanyconn",
    "ib101": "speeding",
    "ib110": "blocked",
    "ib111": "blocked",
    "ib112": "blocked",
    "ib113": "blocked",
    "ib504": "speeding",
    "ib510": "speeding",
    "ib607": "speeding",
    "ib103": "badreputation",
    "ib104": "blocked",
    "ib105": "blocked",
    "ib106": "blocked",
}


def _godaddy(a: Answer) -> str:
    m = re.search(r"\b(ib\d{3})\b", a.text)
    if m and m.group(1) in _GODADDY:
        return _GODADDY[m.group(1)]
    return _first(
        {
            "blocked": ("rbl reject", "www.spamhaus.org/query/bl?ip="),
            "expired": ("has been in the queue too long", "delivery timeout"),
            "mailboxfull": ("account storage limit",),
            "spamdetected": ("message rejected for spam or virus content",),
            "suspend": ("account disabled",),
            "systemerror": ("message is looping",),
            "userunknown": ("recipient not found", "account does not exist"),
        },
        a.text,
    )


def _gsuite(a: Answer) -> str:
    status = a.status[:1]
    reply = a.reply_code[:1]
    if "because the address couldn't be found. check for typos or unnecessary spaces" in a.text:
        return "userunknown"
    if "null mx" in a.text:
        return "notaccept"
    if any(p in a.text for p in (" responded with code nxdomain", "domain name not found")) and (
        status == "5" and reply == "5"
    ):
        return "hostunknown"
    if any(p in a.text for p in (" had no relevant answers.", "responded with code nxdomain", "domain name not found")):
        if status != "5" and reply != "5":
            return "networkerror"
    return ""


def _kddi(a: Answer) -> str:
    # au (KDDI) answers "550 : User unknown" for its reception filter and
    # "550 <addr>: User unknown" for a mailbox that does not exist.
    if "550 : user unknown" in a.text:
        return "filtered"
    if ">: user unknown" in a.text:
        return "userunknown"
    return ""


def _messagelabs(a: Answer) -> str:
    return _first(
        {
            "authfailure": ("domain authentication fail",),
            "badreputation": ("connection rejected by policy",),
            "blocked": (
                "mail rejected because your ip is in the pbl",
                "your ip address has been ",
                "your ip address (ip-addr) has been blocked",
                "your email address (addr) has been blocked",
            ),
            "contenterror": ("stray linefeeds in message",),
            "failedstarttls": ("tls/sslv3 connection required",),
            "norelaying": (" as a relay, ",),
            "notcompliantrfc": ("550 requested action aborted [4]", "has detected that this message is not rfc 5322"),
            "rejected": (
                "sender envelope domain not allowed for sender ip address",
                "your domain has been blocked",
                "your email address has been blocked",
                "your envelope sender is in my badmailfrom list",
                "your email address has been blacklisted",
                "your domain has been blacklisted",
            ),
            "securityerror": ("please turn on smtp authentication in your mail client",),
            "spamdetected": ("message filtered", "filtered by outbound scanning"),
            "toomanyconn": ("too many recipients received this hour", "too many messages"),
            "userunknown": ("no such user", "invalid recipient", "mailbox is not allowed"),
        },
        a.text,
    )


# Mimecast: (reply code, phrase) pairs - the same words mean different things per code.
_MIMECAST: dict[str, tuple[tuple[str, str], ...]] = {
    "authfailure": (
        ("550", "spf sender invalid - envelope rejected"),
        ("550", "dkim sender invalid - envelope rejected"),
        ("550", "dmarc sender invalid - envelope rejected"),
    ),
    "badreputation": (
        ("451", "internal resources are temporarily unavailable"),
        ("550", "local ct ip reputation - (reject)"),
    ),
    "blocked": (
        ("421", "sender address blocked"),
        ("451", "recipient temporarily unavailable"),
        ("451", "ip temporarily blacklisted"),
    ),
    "expired": (("550", "journal messages past the expiration"),),
    "failedstarttls": (
        ("553", "this route requires encryption (tls)"),
        ("553", "this route requires tls version 1.2 or greater"),
        ("553", "this route requires high-strength ciphers"),
        ("554", "configuration is invalid for this certificate"),
    ),
    "mesgtoobig": (("554", "maximum email size exceeded"),),
    "networkerror": (
        ("451", "the incorrect hostname used for inbounds"),
        ("550", "the incorrect hostname used for inbounds"),
        ("554", "mail loop detected"),
    ),
    "norelaying": (("451", "open relay not allowed"), ("451", "open relay is not allowed")),
    "notaccept": (("451", "account inbounds disabled"),),
    "onhold": (
        ("451", "account outbounds disabled"),
        ("451", "hostname is not authorized"),
        ("550", "journal message past expiration"),
    ),
    "policyviolation": (
        ("550", "anti-spoofing policy - inbound not allowed"),
        ("550", "rejected by header-based anti-spoofing policy"),
        ("550", "message bounced due to content examination policy"),
        ("554", "host network not allowed"),
        ("554", "host network, not allowed"),
    ),
    "rejected": (
        ("550", "administrative prohibition envelope blocked"),
        ("550", "envelope blocked - user entry"),
        ("550", "envelope blocked - user domain entry"),
        ("550", "rejected by header-based manually blocked senders - block for manual block"),
        ("550", "rejected by header-based blocked senders - block policy for header from"),
        ("550", "envelope rejected - block policy for envelope from address"),
    ),
    "securityerror": (
        ("535", "incorrect authentication data"),
        ("550", "submitter failed to disabled"),
        ("550", "submitter failed to authenticate"),
    ),
    "systemerror": (
        ("451", "unable to process connection at this time"),
        ("451", "message ended early"),
        ("451", "unable to process command"),
        ("451", "unable to process an email at this time"),
    ),
    "toomanyconn": (
        ("451", "account service is temporarily unavailable"),
        ("452", "too many recipients"),
        ("550", "exceeding outbound thread limit"),
    ),
    "userunknown": (("501", "invalid address"), ("503", "user unknown"), ("550", "invalid recipient")),
    "virusdetected": (("554", "email rejected due to security policies"),),
}


def _mimecast(a: Answer) -> str:
    for reason, pairs in _MIMECAST.items():
        if any(code == a.reply_code and phrase in a.text for code, phrase in pairs):
            return reason
    return ""


def _nttdocomo(a: Answer) -> str:
    # NTT DOCOMO answers "550 Unknown user" both for a missing mailbox (at RCPT) and for
    # its reception filters (after DATA): only the status code and command tell them apart.
    if a.status in ("5.1.1", "5.0.911"):
        return "userunknown"
    if a.status == "5.2.0":
        return "filtered"
    found = _first(
        {
            "mailboxfull": ("552 too much mail data",),
            "syntaxerror": ("503 bad sequence of commands", "504 command parameter not implemented"),
            "toomanyconn": ("552 too many recipients",),
        },
        a.text,
    )
    if found:
        return found
    if a.status == "5.0.0" or not a.status:
        if a.command == "RCPT":
            return "userunknown"
        if a.command == "DATA":
            return "rejected"
    return ""


def _outlook(a: Answer) -> str:
    return _first(
        {
            "hostunknown": (
                "the mail could not be delivered to the recipient because the domain is not reachable",
            ),
            "userunknown": ("requested action not taken: mailbox unavailable",),
        },
        a.text,
    )


# Spectrum (Charter) "AUP#In-1310": four-digit codes, single or as a documented range.
_SPECTRUM: tuple[tuple[int, int, str], ...] = (
    (1000, 1000, "blocked"),
    (1010, 1010, "rejected"),
    (1020, 1080, "rejected"),
    (1090, 1090, "systemerror"),
    (1100, 1150, "requireptr"),
    (1160, 1190, "policyviolation"),
    (1200, 1210, "blocked"),
    (1220, 1250, "blocked"),
    (1260, 1260, "networkerror"),
    (1300, 1340, "toomanyconn"),
    (1350, 1490, "speeding"),
    (1500, 1500, "rejected"),
    (1520, 1520, "rejected"),
    (1530, 1530, "mesgtoobig"),
    (1540, 1540, "speeding"),
    (1550, 1550, "speeding"),
    (1560, 1560, "policyviolation"),
    (1580, 1580, "speeding"),
)


def _spectrum(a: Answer) -> str:
    m = re.search(r"aup#\D*(\d{4})", a.text)
    if m is None:
        return ""
    code = int(m.group(1))
    return next((r for low, high, r in _SPECTRUM if low <= code <= high), "")


def _yahooinc(a: Answer) -> str:
    return _first(
        {
            "authfailure": ("yahoo requires all senders to authenticate with either spf or dkim",),
            "blocked": (" because the ip is in spamhaus's list;", "not accepted from ip addresses on spamhaus xbl"),
            "norelaying": ("relaying denied for ",),
            "notcompliantrfc": ("headers are not rfc compliant",),
            "policyviolation": ("not accepted for policy reasons",),
            # Yahoo uses [TSS04] for volume, complaints and unauthenticated senders alike.
            "rejected": (
                "temporarily deferred due to unexpected volume or user complaints",
                "due to unresolvable rfc.5321 domain",
                " will be permanently deferred",
            ),
            "speeding": ("user is receiving mail too quickly",),
            "suspend": (" is no longer valid.", "this mailbox is disabled"),
            "syntaxerror": ("syntax error in parameters or arguments",),
            "toomanyconn": ("max message per connection reached",),
            "userunknown": ("dd this user doesn't have a ", "mailbox not found"),
        },
        a.text,
    )


def _zoho(a: Answer) -> str:
    return _first(
        {
            "authfailure": ("email rejected per dmarc policy",),
            "blocked": ("greylisted, try again after some time",),
            "rejected": (
                "email cannot be delivered. reason: email flagged as spam",
                "mail rejected by destination domain",
            ),
            "policyviolation": ("email policy violation detected", "mailbox delivery restricted by policy error"),
            "systemerror": ("temporary system error",),
            "userunknown": ("user does not exist",),
            "virusdetected": (" detected by zoho mail",),
        },
        a.text,
    )


_RETURNED_BY: dict[str, Callable[[Answer], str]] = {
    "Aol": _aol,
    "Cox": _cox,
    "Facebook": _facebook,
    "FrancePTT": _franceptt,
    "GoDaddy": _godaddy,
    "GSuite": _gsuite,
    "KDDI": _kddi,
    "MessageLabs": _messagelabs,
    "Mimecast": _mimecast,
    "NTTDOCOMO": _nttdocomo,
    "Outlook": _outlook,
    "Spectrum": _spectrum,
    "YahooInc": _yahooinc,
    "Zoho": _zoho,
}


def find(name: str, answer: Answer) -> str:
    """The provider's own reason for this answer ('' when its tables say nothing)."""
    decide = _RETURNED_BY.get(name)
    if decide is None or not answer.text:
        return ""
    return decide(answer)
