"""The EmailEngine-shaped webhook body for an event.

``{serviceUrl, account, date, path?, specialUse?, event, eventId, data}``:
``serviceUrl`` is ``null`` when unset and a folder's events carry its
``path``/``specialUse`` at the top level, as EmailEngine sends them.  EmailEngine
moves ``eventId`` into the ``X-EE-Wh-Event-Id`` header; mailgate sends that
header too but keeps ``eventId`` in the body, where its own subscribers
deduplicate on it.

A stored payload is the JSON body, or, for a body of another media type (an
``inboundMessage`` for a "raw" route: the MIME, ``message/rfc822``), that body
behind a small frame naming its type (:func:`frame`).  The frame starts with a
NUL byte, which a JSON body never does (JSON escapes it), so nothing a sender
puts in a message can make a raw body pass for JSON or the other way round.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mailgate_common import events
from mailgate_common.inbound import payload as inbound_payload

JSON = "application/json"
RFC822 = "message/rfc822"
_FRAME = b"\x00"


def wants(filter_events: list[str] | None, name: str) -> bool:
    return not filter_events or "*" in filter_events or name in filter_events


def render(event: events.Event, name: str, service_url: str | None) -> bytes:
    return envelope(event, name, service_url, event.webhook_data())


def envelope(event: events.Event, name: str, service_url: str | None, data: dict[str, Any]) -> bytes:
    """The JSON body around an event's ``data``."""
    body: dict[str, Any] = {
        "serviceUrl": service_url or None,
        "account": event.account,
        "date": events.iso(event.occurred_at),
        **events.webhook_context(event),
        "event": name,
        "eventId": event.id,
        "data": data,
    }
    return msgspec.json.encode(body)


def render_inbound(event: events.InboundMessage, received: inbound_payload.Received,
                   route: inbound_payload.RouteRef, *, service_url: str | None, base_url: str,
                   inline_max: int) -> bytes:
    """The stored payload of an ``inboundMessage``: the JSON body, or the framed raw MIME."""
    if event.payload == "raw":
        return frame(inbound_payload.raw_body(received), RFC822)
    data = inbound_payload.build(received, route, base_url=base_url, inline_max=inline_max)
    return envelope(event, "inboundMessage", service_url, data)


def frame(body: bytes, media_type: str) -> bytes:
    """A stored payload holding a body that is not JSON."""
    return _FRAME + media_type.encode("ascii") + _FRAME + body


def unframe(stored: bytes) -> tuple[str, bytes]:
    """(media type, body) of a stored payload."""
    if not stored.startswith(_FRAME):
        return JSON, stored
    media_type, _, body = stored[1:].partition(_FRAME)
    return media_type.decode("ascii", "replace"), body
