"""Provider (rhost), delivery-agent (lda) and per-MTA (lhost) reason tables."""

from __future__ import annotations

from email.message import Message

import pytest

from mailgate_common.bounces import lda, lhost, rhost


@pytest.mark.parametrize(
    ("destination", "remote", "local", "expected"),
    [
        ("cox.net", "cxr.mx.a.cloudfilter.net", "", "Cox"),
        ("ezweb.ne.jp", "", "", "KDDI"),
        ("example.com", "mta6.am0.yahoodns.net", "", "YahooInc"),
        ("example.com", "smtp.secureserver.net", "", "GoDaddy"),
        ("example.com", "mx.example.net", "", ""),
        # A domain that merely ends like a provider's is not that provider.
        ("notcox.net", "", "", ""),
    ],
)
def test_provider(destination: str, remote: str, local: str, expected: str) -> None:
    assert rhost.provider(destination, remote, local) == expected


@pytest.mark.parametrize(
    ("name", "text", "reply", "status", "command", "expected"),
    [
        ("Cox", "550 5.1.0 <a@b.example> sender rejected. aup#cdrbl", "550", "5.1.0", "MAIL", "blocked"),
        ("Spectrum", "550 5.1.0 sender rejected. aup#in-1310", "550", "5.1.0", "", "toomanyconn"),
        ("FrancePTT", "550 5.5.0 invalid recipient. lpn007_416", "550", "5.5.0", "DATA", "userunknown"),
        ("GoDaddy", "550 5.1.1 too many recipients this hour. ib607 <http://x.co>", "550", "5.1.1", "", "speeding"),
        ("Mimecast", "554 host network not allowed - https://x", "554", "5.0.0", "RCPT", "policyviolation"),
        ("Mimecast", "554 host network not allowed - https://x", "550", "5.0.0", "RCPT", ""),
        ("NTTDOCOMO", "550 unknown user a@docomo.ne.jp", "550", "5.0.0", "DATA", "rejected"),
        ("NTTDOCOMO", "550 unknown user a@docomo.ne.jp", "550", "5.0.0", "RCPT", "userunknown"),
        ("KDDI", "550 <a@ezweb.ne.jp>: user unknown", "550", "5.0.0", "", "userunknown"),
        ("KDDI", "550 : user unknown", "550", "5.0.0", "", "filtered"),
        ("Facebook", "550 5.1.1 rcp-p2 refused due to recipient preferences", "550", "5.1.1", "", "filtered"),
    ],
)
def test_provider_reason(name: str, text: str, reply: str, status: str, command: str, expected: str) -> None:
    answer = rhost.Answer(text=text, status=status, reply_code=reply, command=command)
    assert rhost.find(name, answer) == expected


def test_delivery_agents() -> None:
    assert lda.find("procmail: Quota exceeded while writing", "", "") == "mailboxfull"
    piped = '554 "|exec /usr/bin/procmail -f- || exit 75 #neko"... Service unavailable'
    assert lda.find(piped, "", "") == "systemerror"
    assert lda.find("mail.local: unknown user: neko", "", "DATA") == "userunknown"
    assert lda.find("procmail: something odd", "", "") == "mailererror"
    # A refusal of RCPT happened before any delivery program ran.
    assert lda.find("mail.local: unknown user: neko", "", "RCPT") == ""
    # The notice counts when dovecot wrote it, even over the MTA's own diagnostic.
    notice = "Your message to <neko> was automatically rejected:\nNot enough disk space"
    assert lda.find("550 5.1.1 User Unknown", notice, "") == "mailboxfull"
    # ... but not when it only quotes an agent in a transcript next to a real diagnostic.
    assert lda.find("550 5.0.0 Insufficient permission", "maildrop: maildir over quota.", "") == ""


def _message(**headers: str) -> Message:
    msg = Message()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    return msg


def test_ezweb_needs_two_signs() -> None:
    one = _message(From="<Postmaster@ezweb.ne.jp>", Subject="Returned mail")
    assert lhost.identify(one).name == ""
    two = _message(From="<Postmaster@ezweb.ne.jp>", Subject="Mail System Error - Returned Mail", X_SPASIGN="NG")
    origin = lhost.identify(two)
    assert origin.name == "EZweb"
    assert lhost.decide(origin, "", "", "").reason == "filtered"


def test_gmail_state_codes() -> None:
    origin = lhost.Origin("Gmail")
    evidence = "The error that the other server returned was: 500 Remote server does not support TLS (state 6)."
    assert lhost.decide(origin, evidence, "", "").reason == "failedstarttls"
    # A specific status code names the reason itself; the state only gives the command.
    verdict = lhost.decide(origin, "550 5.1.1 <a@b.example>... User Unknown (state 14).", "", "5.1.1")
    assert verdict == lhost.Verdict("", "RCPT")
