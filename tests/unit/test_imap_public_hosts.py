"""An account limited to public mail servers (``publicHostsOnly``) is refused a private
host at connect time, for the watcher and the commands alike (``client.connect``)."""

from __future__ import annotations

import pytest

from mailgate_imap_sync.client import RefusedHost, connect

SETTINGS = {"port": 993, "secure": True, "auth": {"user": "u", "pass": "p"}}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254", "[::1]", "::ffff:10.0.0.1"])
async def test_a_private_host_is_refused_before_any_connection(host: str) -> None:
    with pytest.raises(RefusedHost, match="public mail servers"):
        await connect({**SETTINGS, "host": host}, io_timeout=1, max_bytes=1024, public_only=True)
