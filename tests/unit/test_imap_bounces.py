"""imap-sync's side of bounce handling (pure logic): which reports are believed, what is
fetched together, what reaches the database, and the parser's time budget."""

from __future__ import annotations

import threading

import pytest

from mailgate_imap_sync import bounces, parse
from mailgate_imap_sync.bounces import Sent, verified

FORGED = (b"From: Mail Delivery System <MAILER-DAEMON@attacker.example>\r\n"
          b"To: billing@victim-company.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
          b"--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
          b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.attacker.example\r\n\r\n"
          b"Final-Recipient: rfc822; ceo@biggest-customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
          b"Diagnostic-Code: smtp; 550 5.1.1 user\x00unknown\r\n"
          b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <anything@victim-company.example>\r\n--B--\r\n")


def test_a_report_is_believed_only_about_a_message_sent_to_that_recipient() -> None:
    sent = Sent("q1", "<m1@x>", frozenset({"bob@example.org", "ann@example.org"}))
    assert verified(sent, "Bob@Example.org")
    assert not verified(sent, "ceo@biggest-customer.example")
    assert not verified(None, "bob@example.org")  # no message of this account quoted


def test_a_parsed_report_is_clean_for_the_database() -> None:
    [finding] = bounces.classify(FORGED, "bounce-id")
    assert finding.recipient == "ceo@biggest-customer.example" and finding.hard
    assert finding.diagnostic is not None and "\x00" not in finding.diagnostic
    assert finding.message_id == "anything@victim-company.example"


def test_bodies_are_fetched_in_batches_bounded_in_count_and_bytes() -> None:
    big = 4 * 1024 * 1024
    report = b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n"
    messages = [parse.FetchedMessage(uid=n, size=1000) for n in range(1, 46)]
    messages += [parse.FetchedMessage(uid=100 + n, size=big, header=report) for n in range(3)]
    messages += [parse.FetchedMessage(uid=200, size=big, header=b"Subject: photos\r\n\r\n")]  # not a bounce
    batches = bounces.fetch_batches(messages)
    assert [len(b) for b in batches] == [20, 20, 6, 2]
    assert all(sum(m.size or 0 for m in b) <= bounces.FETCH_BYTES for b in batches)
    assert 200 not in {m.uid for b in batches for m in b}


async def test_a_parse_past_its_budget_counts_as_ordinary_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    classify = bounces.classify

    def stuck(raw: bytes, bounce_message: str) -> list[bounces.Finding]:
        release.wait(10)
        return classify(raw, bounce_message)

    monkeypatch.setattr(bounces, "PARSE_BUDGET", 0.2)
    monkeypatch.setattr(bounces, "classify", stuck)
    try:
        assert await bounces.classify_off_loop(FORGED, "bounce-id") == []
    finally:
        release.set()
    monkeypatch.setattr(bounces, "classify", classify)
    assert len(await bounces.classify_off_loop(FORGED, "bounce-id")) == 1
