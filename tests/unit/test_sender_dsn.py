"""RFC 3461 parameters built from a message's ``dsn`` option, and the submit queue's state."""

from __future__ import annotations

from typing import Any

import pytest

from mailgate_sender.dsn import Dsn, xtext
from mailgate_sender.queue_control import QueueState


def test_xtext_escapes_plus_equals_and_non_printables() -> None:
    assert xtext("order-4815") == b"order-4815"
    assert xtext("a+b=c d") == b"a+2Bb+3Dc+20d"
    assert xtext("é") == b"+C3+A9"


def test_full_option_gives_mail_and_rcpt_parameters() -> None:
    dsn = Dsn.from_option({"id": "order 1", "return": "headers", "notify": ["failure", "delay"],
                           "recipient": "bounces@example.com"})
    assert dsn is not None
    assert dsn.mail_options() == [b"RET=HDRS", b"ENVID=order+201"]
    assert dsn.rcpt_options() == [b"NOTIFY=FAILURE,DELAY", b"ORCPT=rfc822;bounces@example.com"]


@pytest.mark.parametrize(("notify", "expected"), [
    ("success", [b"NOTIFY=SUCCESS"]),  # EmailEngine accepts a single value for the array
    (["never", "failure"], [b"NOTIFY=NEVER"]),  # NEVER excludes every other value
    (["failure", "failure"], [b"NOTIFY=FAILURE"]),
])
def test_notify_values(notify: Any, expected: list[bytes]) -> None:
    dsn = Dsn.from_option({"return": "full", "notify": notify})
    assert dsn is not None
    assert dsn.mail_options() == [b"RET=FULL"]
    assert dsn.rcpt_options() == expected


@pytest.mark.parametrize("option", [None, {}, "full", {"return": None, "notify": []}])
def test_no_dsn_asked(option: Any) -> None:
    assert Dsn.from_option(option) is None


@pytest.mark.parametrize(("value", "expected"), [
    (None, QueueState()),
    ({"paused": True}, QueueState(paused=True)),
    ({"paused": False, "concurrency": 3}, QueueState(concurrency=3)),
    ({"paused": True, "concurrency": 0}, QueueState(paused=True)),
    ({"concurrency": True}, QueueState()),
    ("paused", QueueState()),
])
def test_queue_state_from_setting(value: object, expected: QueueState) -> None:
    assert QueueState.from_value(value) == expected
