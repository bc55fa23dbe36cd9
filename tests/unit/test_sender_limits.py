"""Pure logic of polite sending: which replies mean "slow down", and provider defaults."""

from __future__ import annotations

import pytest

from mailgate_sender.limits import Limits, effective_limits, is_slow_down, throttle_delay
from mailgate_sender.outcome import classify_reply


@pytest.mark.parametrize(
    ("code", "text", "slow"),
    [
        (421, "4.7.0 Too many messages, slow down", True),
        (421, "Service not available, closing transmission channel", True),
        (450, "4.7.1 Rate limit exceeded for sender", True),
        (451, "4.7.1 <a@b>: Try again later", False),
        (451, "4.7.1 Greylisted, please retry: rate of unknown senders", False),
        (451, "4.3.0 Temporary failure", False),
        (550, "5.7.1 Too many recipients (policy)", False),
        (250, "2.0.0 Ok", False),
    ],
)
def test_slow_down_replies(code: int, text: str, slow: bool) -> None:
    assert is_slow_down(classify_reply(code, text, "RCPT TO")) is slow


def test_provider_defaults_apply_only_without_explicit_limits() -> None:
    assert effective_limits(None, "smtp.office365.com") == Limits({"minute": 30, "day": 10000}, 3)
    assert effective_limits(None, "SMTP.Gmail.com.") == Limits({"day": 2000}, 10)
    assert effective_limits(None, "mail.example.org") == Limits({})
    assert effective_limits({"perSecond": 5, "connections": 2}, "smtp.office365.com") == Limits({"second": 5}, 2)


def test_throttle_delay_doubles_and_is_capped() -> None:
    assert [throttle_delay(n) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert throttle_delay(20) == 900.0
