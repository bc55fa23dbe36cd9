"""Reasons that depend on who wrote the bounce or on what it says about the whole message."""

from __future__ import annotations

from mailgate_common.bounces import parse_bounce

_GAVE_UP = b"""\
<kijitora@example.net>:
Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)
I'm not going to try again; this message has been in the queue too long.
"""


def _text_notice(headers: bytes, intro: bytes, tail: bytes = b"") -> bytes:
    return (
        headers
        + b"To: sender@example.com\nFrom: MAILER-DAEMON@mx.example.org\n\n"
        + intro
        + b"\n\n"
        + _GAVE_UP
        + b"\n--- Below this line is a copy of the message.\n\n"
        + b"From: sender@example.com\nTo: kijitora@example.net\nSubject: hi\n\nhello\n"
        + tail
    )


def test_qmail_connection_failure_is_a_network_error() -> None:
    # qmail-send's own notice: its wording says why it gave up (no connection at all).
    raw = _text_notice(
        b"Subject: failure notice\n",
        b"Hi. This is the qmail-send program at mx.example.org.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.",
    )
    (r,) = parse_bounce(raw).recipients
    assert (r.address, r.status, r.reason) == ("kijitora@example.net", "4.4.1", "networkerror")


def test_qmail_is_known_by_its_received_stamp_too() -> None:
    raw = _text_notice(
        b"Received: (qmail 2222 invoked for bounce); 29 Apr 2017 23:34:45 +0900\n"
        b"Subject: Returned mail\n",
        b"Hi. This is the qmail-send program at mx.example.org.",
    )
    (r,) = parse_bounce(raw).recipients
    assert r.reason == "networkerror"


def test_same_words_from_a_qmail_clone_are_a_timeout() -> None:
    # Neither qmail's subject nor its Received stamp: the 4.4.1 status decides (expired).
    raw = _text_notice(
        b"Subject: Permanent Delivery Failure\n",
        b"Message from example.org.\nUnable to deliver message to the following address(es).",
    )
    (r,) = parse_bounce(raw).recipients
    assert (r.status, r.reason) == ("4.4.1", "expired")


_SENDMAIL_STYLE = b"""\
From: "MAILER-DAEMON" <MAILER-DAEMON@mx.example.org>
To: <sender@example.com>
Subject: FAILURE NOTICE : hello
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

  ----- The following addresses had permanent fatal errors -----
>>> kijitora@example.net <kijitora@example.net>

  ----- Transcript of session follows -----
550 <kijitora@example.net>: Recipient address rejected: User unknown in local recipient table

--B
Content-Type: message/rfc822

From: sender@example.com
To: kijitora@example.net
Subject: hello

hello
--B--
"""


def test_recipient_address_rejected_alone_does_not_name_the_command() -> None:
    # Postfix also says "Recipient address rejected" after DATA: with neither a status
    # code nor the command, "User unknown" is a content filter's verdict (as in Sisimai).
    (r,) = parse_bounce(_SENDMAIL_STYLE).recipients
    assert r.reason == "filtered"
    in_rcpt = _SENDMAIL_STYLE.replace(b"recipient table\n", b"recipient table (in reply to RCPT TO command)\n")
    (r,) = parse_bounce(in_rcpt).recipients
    assert r.reason == "userunknown"


def test_exchange_online_access_denied_is_an_unknown_recipient() -> None:
    raw = b"""\
From: "postmaster" <postmaster@example.org>
To: <sender@example.com>
Subject: [Postmaster] Email Delivery Failure
Content-Type: text/plain

An email that you attempted to send to the following address could not be delivered:

-- kijitora@example.org

The problem appears to be :

-- Recipient email address is possibly incorrect

Additional information follows :

-- 5.4.1 Recipient address rejected: Access denied. [AB1PR01MB0000.jpnprd01.prod.outlook.com]
"""
    (r,) = parse_bounce(raw).recipients
    assert (r.address, r.status, r.reason) == ("kijitora@example.org", "5.4.1", "userunknown")


_FILTER_DSN = b"""\
From: "Content-filter at example.org" <postmaster@example.org>
To: <sender@example.com>
Subject: Considered UNSOLICITED BULK EMAIL, apparently from you
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

A message from <sender@example.com> to:
-> kijitora@example.org

was considered unsolicited bulk e-mail (UBE).
%s
Delivery of the email was stopped!

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; example.org

Final-Recipient: rfc822;kijitora@example.org
Action: failed
Status: 5.7.0
Diagnostic-Code: smtp; 554 5.7.0 Reject, id=20025-09 - SPAM

--B--
"""


def test_malformed_message_reported_in_the_explanation() -> None:
    # The filter's complaint is about the message (two From: fields), not the recipient.
    raw = _FILTER_DSN % b'Duplicate header field: "From"'
    (r,) = parse_bounce(raw).recipients
    assert r.reason == "notcompliantrfc"
    (r,) = parse_bounce(_FILTER_DSN % b"").recipients
    assert r.reason == "spamdetected"
