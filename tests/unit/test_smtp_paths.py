"""MAIL FROM / RCPT TO path parsing: the fast path must agree with aiosmtpd's (pure logic)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from mailgate_smtp_ingress.server import IngressSMTP

PATHS = [
    "<a@b.example>",
    " <first.last+tag@mail.example.org> SIZE=1024 BODY=8BITMIME",
    "<a@b.example>  NOTIFY=FAILURE,DELAY   ORCPT=rfc822;a@b.example",
    "<o'brien_x-y@sub-domain.example>",
    # Not simple: left to aiosmtpd's general parser.
    "<>",
    '<"quoted local"@b.example>',
    "a@b.example",
    "<a@[192.0.2.1]>",
    "<@relay.example:a@b.example>",
    "",
]


@pytest.mark.parametrize("arg", PATHS)
def test_same_address_and_parameters_as_aiosmtpd(arg: str) -> None:
    reference = SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]
    protocol = object.__new__(IngressSMTP)  # parsing needs no connection
    protocol.local_part_limit = 0
    assert protocol._getaddr(arg) == reference


def test_unparsable_path_is_a_syntax_error_not_a_crash() -> None:
    protocol = object.__new__(IngressSMTP)
    protocol.local_part_limit = 0
    assert protocol._getaddr("<") == (None, None)  # -> "501 5.1.3 Bad address syntax"
