"""Which imap-sync failures are outages (the bus retries the command for as long as they
last) and which are not (a few retries, then the dead-letter queue)."""

from __future__ import annotations

import pytest

from mailgate_common.failures import is_transient
from mailgate_imap_sync.client import AuthError, ConnectError, ImapError, RefusedHost, ResponseTooLarge, connect
from tests.support.stack import free_port


def test_a_broken_or_unreachable_server_is_an_outage() -> None:
    # Raised without a cause too: "connection lost", "no answer within 30 s".
    assert is_transient(ConnectError("connection lost"))


@pytest.mark.parametrize("error", [AuthError("[AUTHENTICATIONFAILED]"), RefusedHost("10.0.0.1 is private"),
                                   ResponseTooLarge("over the bound"), ImapError("APPEND failed: NO quota")])
def test_a_refusal_is_not_an_outage(error: ImapError) -> None:
    assert not is_transient(error)


async def test_a_server_that_is_down_raises_an_outage() -> None:
    settings = {"host": "127.0.0.1", "port": free_port(), "auth": {"user": "u", "pass": "p"}}
    with pytest.raises(ConnectError) as raised:
        await connect(settings, io_timeout=2, max_bytes=1024)
    assert is_transient(raised.value)
