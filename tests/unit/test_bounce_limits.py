"""The bounce parser's cost is bounded whatever a message holds.

Anyone can mail a watched mailbox, and every new message of up to 128 KB is
parsed: a message built to be slow (one long line without "@" took 90 s for
120 KB, quadratic) would stall imap-sync.  The shapes below each cost the old
parser seconds to minutes at this size.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from mailgate_common.bounces import parse_bounce

SIZE = 120 * 1024
HEADER = (b"From: MAILER-DAEMON@example.net\r\nTo: victim@example.com\r\n"
          b"Subject: Undelivered Mail Returned to Sender\r\nContent-Type: text/plain\r\n\r\n")


def notice(body: bytes) -> bytes:
    return HEADER + b"The following address failed:\r\n" + body + b"\r\n"


def report(fields: bytes, text: bytes = b"Your message could not be delivered.\r\n") -> bytes:
    return (b"From: Mail Delivery System <MAILER-DAEMON@x.example>\r\nTo: a@b.example\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\n" + text
            + b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.x.example\r\n\r\n"
            + fields + b"--B--\r\n")


def nested(depth_bytes: int) -> bytes:
    # Each level's Content-Type starts the next level: the first one ends the top's header.
    parts, n = [HEADER.replace(b"Content-Type: text/plain\r\n\r\n", b"MIME-Version: 1.0\r\n")], 0
    while sum(map(len, parts)) < depth_bytes:
        parts.append(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n))
        n += 1
    return b"".join(parts)


SHAPES: dict[str, Callable[[], bytes]] = {
    "one long line (the review's repro)": lambda: notice(b"x" * SIZE),
    "a long run of dots": lambda: notice(b"." * SIZE),
    "status-code look-alikes": lambda: notice(b"5.5." * (SIZE // 4)),
    "one address with a huge domain": lambda: notice(b"a@" + b"b" * SIZE),
    "unclosed script tags": lambda: HEADER.replace(b"text/plain", b"text/html") + b"<script>" * (SIZE // 8),
    "a huge report field": lambda: report(b"Final-Recipient: rfc822; " + b"x" * SIZE + b"\r\nStatus: 5.1.1\r\n\r\n"),
    "a huge diagnostic": lambda: report(b"Final-Recipient: rfc822; u@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                                        b"Diagnostic-Code: smtp; " + b"5.5." * (SIZE // 4) + b"\r\n\r\n"),
    "thousands of nested multiparts": lambda: nested(SIZE),
}
CROWDS: dict[str, Callable[[], bytes]] = {
    "thousands of failed addresses": lambda: notice(b"".join(b"u%d@b.cc\r\n" % n for n in range(SIZE // 12))),
    "thousands of addresses on one line": lambda: notice(b"a@b.cc " * (SIZE // 7)),
    "thousands of report recipients": lambda: report(b"".join(
        b"Final-Recipient: rfc822; u%d@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % n
        for n in range(SIZE // 60))),
    "a transcript of thousands of replies": lambda: notice(b"".join(
        b"<<< 550-5.1.1 u%d@x.example\r\n" % n for n in range(SIZE // 30))),
}


def timed(raw: bytes) -> float:
    started = time.perf_counter()
    parse_bounce(raw)
    return time.perf_counter() - started


def test_the_crafted_120_kb_bounce_of_the_review_costs_milliseconds() -> None:
    raw = notice(b"x" * SIZE)
    assert len(raw) > SIZE
    parse_bounce(raw)  # imports and regex compilation are not the point
    assert timed(raw) < 0.1


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_shape_of_text_makes_parsing_slow(shape: str) -> None:
    # Each of these took the old parser from 10 s to minutes.
    assert timed(SHAPES[shape]()) < 0.1


@pytest.mark.parametrize("shape", sorted(CROWDS))
def test_a_crowd_of_recipients_is_read_up_to_a_bound(shape: str) -> None:
    # Each recipient's reason is read from the notice, so these cost more, but a
    # fixed amount: the old parser took minutes (cubic in the recipients).
    raw = CROWDS[shape]()
    assert timed(raw) < 1.0
    report_ = parse_bounce(raw)
    assert 0 < len(report_.recipients) <= 20
