"""The message as written after DATA: the same bytes aiosmtplib would send, whole or
streamed in pieces (pure logic)."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailgate_sender.smtp_connection import BODY_CHUNK, data_body, data_chunks

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


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 64])
@pytest.mark.parametrize("raw", BODIES)
def test_streamed_in_pieces_the_same_bytes(raw: bytes, size: int) -> None:
    assert b"".join(data_chunks(raw, size)) == data_body(raw)


def test_random_bodies_streamed_in_pieces_are_the_same_bytes() -> None:
    rng = random.Random(2024)
    for _ in range(2000):
        raw = bytes(rng.choice(b"a.\r\n") for _ in range(rng.randrange(0, 40)))
        size = rng.randrange(1, 12)
        assert b"".join(data_chunks(raw, size)) == data_body(raw), (raw, size)


def test_a_large_body_is_streamed_in_bounded_pieces() -> None:
    raw = (b"." + b"x" * 997 + b"\r\n") * 3000 + b"no final newline"
    pieces = list(data_chunks(raw, BODY_CHUNK))
    assert len(pieces) > 10
    assert max(map(len, pieces)) <= 2 * BODY_CHUNK  # each one dot-stuffed: at most doubled
    assert b"".join(pieces) == data_body(raw)
