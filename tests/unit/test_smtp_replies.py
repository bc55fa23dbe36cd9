"""Reading SMTP replies off the wire and pairing them with the commands sent (pure logic)."""

from __future__ import annotations

import aiosmtplib
import msgspec
import pytest

from mailgate_sender.outcome import classify_exception
from mailgate_sender.smtp_connection import REPLY_TEXT_LIMIT, ReplyQueue


def _queue(*sent: str) -> ReplyQueue:
    queue = ReplyQueue()
    queue.sent.extend(sent)
    return queue


def test_pipelined_replies_in_one_read_are_paired_in_order() -> None:
    queue = _queue("MAIL FROM", "RCPT TO", "DATA")
    queue.data_received(b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert [(name, reply.code) for name, reply in queue.replies] == [("MAIL FROM", 250), ("RCPT TO", 550),
                                                                     ("DATA", 354)]
    assert queue.replies[1][1].message == "5.1.1 No such user"
    assert not queue.sent and queue.error is None


def test_a_reply_split_across_reads_and_lines_is_one_reply() -> None:
    queue = _queue("DATA")
    for chunk in (b"550-5.7.1 Message rejected", b"\r\n550-5.7.1 see https://example.org/why\r\n", b"550 5.7.1 bye",
                  b"\r\n"):
        assert not queue.replies
        queue.data_received(chunk)
    [(name, reply)] = queue.replies
    assert (name, reply.code) == ("DATA", 550)
    assert reply.message == "5.7.1 Message rejected\n5.7.1 see https://example.org/why\n5.7.1 bye"


def test_bare_code_and_lf_only_lines_are_replies() -> None:
    queue = _queue("RSET", "MAIL FROM")
    queue.data_received(b"250\n250 ok\n")
    assert [(name, reply) for name, reply in queue.replies] == [
        ("RSET", aiosmtplib.SMTPResponse(250, "")), ("MAIL FROM", aiosmtplib.SMTPResponse(250, "ok"))]


def test_a_reply_nobody_asked_for_breaks_the_connection() -> None:
    queue = _queue()
    queue.data_received(b"421 4.4.2 Idle too long\r\n")
    assert isinstance(queue.error, aiosmtplib.SMTPServerDisconnected)
    assert "421 4.4.2 Idle too long" in str(queue.error)
    assert not queue.replies


def test_nothing_after_a_malformed_line_is_paired() -> None:
    queue = _queue("MAIL FROM", "RCPT TO", "DATA")
    queue.data_received(b"250 ok\r\nhello there\r\n250 ok\r\n")
    queue.data_received(b"354 go ahead\r\n")
    assert [name for name, _ in queue.replies] == ["MAIL FROM"]
    assert isinstance(queue.error, aiosmtplib.SMTPResponseException)


def test_an_endless_reply_is_refused() -> None:
    queue = _queue("EHLO")
    for _ in range(100):
        queue.data_received(b"250-" + b"x" * 1000 + b"\r\n")
    assert isinstance(queue.error, aiosmtplib.SMTPResponseException)
    assert not queue.replies


def test_connection_loss_is_the_error_the_reader_gets() -> None:
    queue = _queue("DATA")
    queue.connection_lost(ConnectionResetError())
    assert isinstance(queue.error, aiosmtplib.SMTPServerDisconnected)


def test_a_latin1_reply_is_read_as_text_that_can_be_stored_and_sent_on() -> None:
    queue = _queue("RCPT TO")
    queue.data_received(b"550 5.1.1 <x@example.de>: Empf\xe4nger unbekannt\r\n")
    [(_, reply)] = queue.replies
    assert reply.message == "5.1.1 <x@example.de>: Empfänger unbekannt"
    msgspec.json.encode(reply.message)  # no lone surrogate: events can carry it


def test_a_nul_in_a_reply_becomes_a_replacement_character() -> None:
    queue = _queue("RCPT TO")
    queue.data_received(b"550 5.1.1 Unknown\x00user\r\n")
    [(_, reply)] = queue.replies
    assert reply.message == "5.1.1 Unknown\ufffduser"


def test_a_reply_text_is_capped() -> None:
    queue = _queue("DATA")
    queue.data_received(b"".join(b"550-" + b"y" * 900 + b"\r\n" for _ in range(10)) + b"550 end\r\n")
    [(_, reply)] = queue.replies
    assert len(reply.message) == REPLY_TEXT_LIMIT and reply.message.endswith("…")


@pytest.mark.parametrize(("exc", "readable"), [
    (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Anmeldung ung\udcfcltig"), "535 5.7.8 Anmeldung ungültig"),
    (aiosmtplib.SMTPResponseException(554, "5.7.1 abgelehnt \udce4\x00"), "554 5.7.1 abgelehnt ä\ufffd"),
    (aiosmtplib.SMTPServerDisconnected("Verbindung getrennt \udcfc"), "Verbindung getrennt ü"),
    (aiosmtplib.SMTPConnectTimeoutError("Zeit\udcfcberschreitung"), "Zeitüberschreitung"),
])
def test_aiosmtplib_exception_texts_are_made_storable(exc: Exception, readable: str) -> None:
    # aiosmtplib decodes the replies it reads (connect, EHLO, AUTH) with surrogateescape.
    outcome = classify_exception(exc, "CONNECT")
    assert readable in outcome.response
    msgspec.json.encode(outcome.response)
