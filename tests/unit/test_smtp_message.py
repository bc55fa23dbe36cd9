"""Choosing the account of a message received without AUTH (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailgate_smtp_ingress.message import Rejected, compose

RAW = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _compose(raw: bytes, **kw: object) -> str:
    message = compose(raw, mail_from="a@example.com", rcpt_tos=["b@example.org"], max_attempts=3, now=NOW, **kw)
    return message.account_id


def test_header_wins_over_the_default_account() -> None:
    assert _compose(b"X-EE-Account: picked\r\n" + RAW, account=None, default_account="fallback") == "picked"


def test_default_account_when_the_header_is_missing() -> None:
    assert _compose(RAW, account=None, default_account="fallback") == "fallback"


def test_no_account_at_all_is_refused() -> None:
    with pytest.raises(Rejected) as error:
        _compose(RAW, account=None)
    assert error.value.reply.startswith("550 5.7.1")


def test_authenticated_account_ignores_the_header() -> None:
    assert _compose(b"X-EE-Account: other\r\n" + RAW, account="me", default_account="fallback") == "me"
