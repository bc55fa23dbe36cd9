"""The ``inboundMessage`` webhook body.

CONTRACT (filled in by the payload work; other code imports these names as they are):
``build(received, route, *, base_url, inline_max) -> dict`` is the event's
``data``: EmailEngine's messageNew shape (``from``, ``to``, ``cc``, ``replyTo``,
``subject``, ``messageId``, ``headers``, ``text{plain, html, strippedPlain}``,
``attachments`` inline as base64 up to ``inline_max`` bytes, else with a
``url`` under ``base_url``) plus ``envelope``, ``recipient{address, local,
tag, domain, captures}``, ``auth``, ``spam``, ``automated``, ``route``.
``raw_body(received)`` is the "raw" form's body (the MIME, message/rfc822).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Received:
    """A stored inbound message (an ``inbound_messages`` row), as the payload needs it."""

    id: str
    raw: bytes
    received_at: datetime
    mail_from: str
    rcpt_to: list[str]
    remote_ip: str | None = None
    helo: str | None = None
    tls: str | None = None
    auth: dict[str, Any] = field(default_factory=dict)
    spam: dict[str, Any] = field(default_factory=dict)
    automated: str | None = None


@dataclass(frozen=True)
class RouteRef:
    """Which route took the message, for which recipients (one inboundMessage per route)."""

    id: str
    name: str
    recipients: list[str]
    tag: str | None = None
    captures: dict[str, str] = field(default_factory=dict)
