"""The message as written after DATA: the same bytes aiosmtplib would send (pure logic)."""

from __future__ import annotations

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailgate_sender.smtp_connection import data_body

BODIES = [
    b"Subject: plain\r\n\r\nline\r\n",
    b"Subject: no final newline\r\n\r\nline",
    b".starts with a dot\r\n",
    b"Subject: x\r\n\r\n.leading dot\r\n..two dots\r\nend.\r\n.\r\n",
    b"Subject: lone LF\n\nbody\n.dot after LF\n",
    b"Subject: lone CR\r\rbody\r.dot after CR\r",
    b"mixed\r\nendings\nand\rcarriage\r\n",
    b"",
]


@pytest.mark.parametrize("raw", BODIES)
def test_same_bytes_as_aiosmtplib(raw: bytes) -> None:
    reference = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"
    assert data_body(raw) == reference


def test_usual_message_is_passed_through() -> None:
    raw = b"Subject: x\r\n\r\n" + b"x" * 1000 + b"\r\n"
    assert data_body(raw) == raw + b".\r\n"
