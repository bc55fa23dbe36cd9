"""Focused tests of parse_bounce() on small hand-written messages, one per format family."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mailgate_common.bounces import parse_bounce
from mailgate_common.bounces.cli import bounce
from mailgate_common.bounces.codes import find_reply_code, find_status, prefer

DSN = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

<nobody@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1
    <nobody@example.net>: Recipient address rejected: User unknown in local
    recipient table (in reply to RCPT TO command)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; nobody@example.net
Original-Recipient: rfc822;nobody@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address
    rejected: User unknown in local recipient table

--B
Content-Type: text/rfc822-headers

From: sender@example.com
To: nobody@example.net
Message-ID: <original-1@example.com>
Subject: hello

--B--
"""

QMAIL = b"""\
From: MAILER-DAEMON@mx.example.org
To: sender@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<full@example.net>:
192.0.2.2 does not like recipient.
Remote host said: 552 5.2.2 Mailbox full
Giving up on 192.0.2.2.

--- Below this line is a copy of the message.

Return-Path: <sender@example.com>
Message-ID: <original-2@example.com>
From: sender@example.com
To: full@example.net
Subject: hi

body
"""

EXIM = b"""\
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: sender@example.com
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: gone@example.net
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone@example.net
    host mx.example.net [192.0.2.3]
    SMTP error from remote mail server after RCPT TO:<gone@example.net>:
    550 5.1.1 No such user here

------ This is a copy of the message, including all the headers. ------

Message-Id: <original-3@example.com>
From: sender@example.com
To: gone@example.net
"""

GMAIL = b"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: sender@gmail.com
Subject: Delivery Status Notification (Failure)

Delivery to the following recipient failed permanently:

     nope@example.jp

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for
the recipient domain example.jp by mx.example.jp. [192.0.2.4].

The error that the other server returned was:
550 5.1.1 <nope@example.jp>... User Unknown

----- Original message -----

Message-Id: <original-4@gmail.com>
From: sender@gmail.com
To: nope@example.jp
"""

EXCHANGE = b"""\
From: System Administrator <postmaster@example.com>
To: sender@example.org
Subject: Undeliverable: hello
Content-Type: text/plain

Your message did not reach some or all of the intended recipients.

      Subject:  hello
      Sent:     4/29/2010 11:34 PM

The following recipient(s) could not be reached:

      missing@example.com on 4/29/2010 11:34 PM
            The e-mail account does not exist at the organization this message was sent to.
            <mx.example.com #5.1.1 smtp;550 5.1.1 User unknown>
"""

ARF = b"""\
From: staff@fbl.example.net
To: abuse@example.com
Subject: FW: Earn money
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.9.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <complainer@example.net>
Source-IP: 192.0.2.9

--F
Content-Type: message/rfc822

From: sender@example.com
To: complainer@example.net
Message-ID: <original-5@example.com>
Subject: Earn money

Spam spam spam
--F--
"""

VACATION = b"""\
From: away@example.net
To: sender@example.com
Subject: Out of Office: hello
Auto-Submitted: auto-replied
In-Reply-To: <original-6@example.com>

I am out of the office until Monday and will reply when I am back.
"""

DELIVERED = DSN.replace(b"Action: failed", b"Action: delivered").replace(
    b"Status: 5.1.1", b"Status: 2.0.0"
)

ORDINARY = b"""\
From: friend@example.com
To: me@example.org
Subject: lunch?

Shall we have lunch on Friday? Reply to friend@example.com.
"""


def test_rfc3464_dsn() -> None:
    report = parse_bounce(DSN)
    assert report.kind == "bounce"
    assert report.message_id == "original-1@example.com"
    [r] = report.recipients
    assert (r.address, r.action, r.status, r.reply_code) == (
        "nobody@example.net",
        "failed",
        "5.1.1",
        550,
    )
    assert r.reason == "userunknown"
    assert r.hard is True
    assert r.mta == "mx.example.net"


def test_qmail_text_bounce() -> None:
    report = parse_bounce(QMAIL)
    assert report.kind == "bounce"
    assert report.message_id == "original-2@example.com"
    [r] = report.recipients
    assert (r.address, r.status, r.reply_code, r.reason) == (
        "full@example.net",
        "5.2.2",
        552,
        "mailboxfull",
    )
    assert r.hard is False


def test_exim_text_bounce_uses_failed_recipients() -> None:
    report = parse_bounce(EXIM)
    assert report.kind == "bounce"
    [r] = report.recipients
    assert r.address == "gone@example.net"
    assert r.status == "5.1.1"
    assert r.reason == "userunknown"


def test_gmail_text_bounce() -> None:
    report = parse_bounce(GMAIL)
    assert report.kind == "bounce"
    assert [r.address for r in report.recipients] == ["nope@example.jp"]
    assert report.recipients[0].status == "5.1.1"
    assert report.message_id == "original-4@gmail.com"


def test_exchange_text_bounce() -> None:
    report = parse_bounce(EXCHANGE)
    assert report.kind == "bounce"
    [r] = report.recipients
    assert r.address == "missing@example.com"
    assert r.status == "5.1.1"


def test_arf_complaint() -> None:
    report = parse_bounce(ARF)
    assert report.kind == "complaint"
    assert report.feedback_type == "abuse"
    assert report.message_id == "original-5@example.com"
    [r] = report.recipients
    assert (r.address, r.reason, r.feedback_type) == ("complainer@example.net", "feedback", "abuse")


def test_vacation_is_not_a_bounce() -> None:
    report = parse_bounce(VACATION)
    assert report.kind == "autoreply"
    assert report.message_id == "original-6@example.com"
    assert [r.address for r in report.recipients] == ["away@example.net"]


def test_success_dsn_is_delivered() -> None:
    report = parse_bounce(DELIVERED)
    assert report.kind == "delivered"
    assert report.recipients[0].action == "delivered"


def test_ordinary_mail_is_none() -> None:
    assert parse_bounce(ORDINARY).kind == "none"
    assert parse_bounce(b"").kind == "none"
    assert parse_bounce(b"\x00\xff garbage").kind == "none"


def test_line_endings_give_identical_results() -> None:
    for message in (DSN, QMAIL, EXIM, GMAIL, ARF):
        lf = parse_bounce(message)
        assert parse_bounce(message.replace(b"\n", b"\r\n")) == lf
        assert parse_bounce(message.replace(b"\n", b"\r")) == lf


def test_mbox_from_line_is_ignored() -> None:
    assert parse_bounce(b"From MAILER-DAEMON Thu Apr 29 23:34:45 2010\n" + QMAIL).kind == "bounce"


def test_status_and_reply_code_extraction() -> None:
    assert find_status("host 192.0.2.20 said: 550 5.7.1 denied") == "5.7.1"
    assert find_status("connect to 192.0.2.20 failed") is None
    assert find_status("(#5.4.4)") == "5.4.4"
    assert find_reply_code("said: 452 4.2.2 over quota") == 452
    # A specific code in the server's words beats the generic Status: field.
    assert prefer("5.0.0", "5.1.1", 550) == "5.1.1"
    assert prefer("5.1.1", "5.0.0", 550) == "5.1.1"


def test_cli_prints_one_json_line_per_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.eml", tmp_path / "b.eml"
    first.write_bytes(DSN)
    second.write_bytes(VACATION)
    result = CliRunner().invoke(bounce, ["parse", str(first), str(second)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["kind"] for line in lines] == ["bounce", "autoreply"]
    assert lines[0]["recipients"][0]["replyCode"] == 550
    assert set(lines[0]["recipients"][0]) == {
        "address",
        "action",
        "status",
        "replyCode",
        "diagnostic",
        "reason",
        "hard",
        "mta",
    }
    assert lines[0]["messageId"] == "original-1@example.com"
