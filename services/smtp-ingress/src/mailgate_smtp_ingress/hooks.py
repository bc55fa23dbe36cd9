"""What both doors do the same way: the PROXY header, errors, and commits that must finish.

The submission door (``handler.IngressHandler``) and the MX door
(``mx_handler.MxHandler``) inherit these hooks, so a PROXY header, a failed
STARTTLS handshake or an undecodable command is handled identically on both ports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from mailgate_smtp_ingress import replies

log = logging.getLogger("mailgate.smtp_ingress")


def client_address(session: Session) -> str:
    """The real client: the PROXY header's source when present, else the TCP peer."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return str(proxy.src_addr)
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


class ConnectionHooks:
    def __init__(self) -> None:
        self._committing: set[asyncio.Task[str]] = set()

    async def handle_PROXY(self, server: SMTP, session: Session, envelope: Envelope,
                           proxy_data: ProxyData) -> bool:
        # aiosmtpd only calls this for a header it parsed as valid; anything else
        # is dropped before the greeting.
        log.debug("PROXY %s -> %s", proxy_data.src_addr, proxy_data.dst_addr)
        return True

    async def shielded(self, commit: Coroutine[Any, Any, str]) -> str:
        """Run a commit that a client hanging up must not cancel halfway; stop() waits for it."""
        task = asyncio.ensure_future(commit)
        self._committing.add(task)
        task.add_done_callback(self._committing.discard)
        return await asyncio.shield(task)

    async def handle_exception(self, error: Exception) -> str:
        # Never leak internals into the reply (aiosmtpd's default echoes the exception).
        if isinstance(error, TLSSetupException):
            # The client's failed handshake; aiosmtpd closes the connection.
            log.info("STARTTLS handshake failed: %r", error.__cause__)
            return "454 4.7.0 TLS not available due to temporary reason"
        if isinstance(error, UnicodeError):
            # Undecodable bytes from the client (aiosmtpd fails echoing them back):
            # the client's syntax error, not our failure, so no 4xx inviting retries.
            return "500 5.5.2 Error: bad syntax"
        log.exception("SMTP session error: %r", error)
        return replies.INTERNAL

    async def drain(self, grace: float) -> None:
        """Let messages being committed finish before the process exits."""
        if self._committing:
            await asyncio.wait(set(self._committing), timeout=grace)
