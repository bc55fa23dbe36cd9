"""The EmailEngine-shaped webhook body for an event.

``{serviceUrl, account, date, path?, specialUse?, event, eventId, data}``:
``serviceUrl`` is ``null`` when unset and a folder's events carry its
``path``/``specialUse`` at the top level, as EmailEngine sends them.  EmailEngine
moves ``eventId`` into the ``X-EE-Wh-Event-Id`` header; mailgate sends that
header too but keeps ``eventId`` in the body, where its own subscribers
deduplicate on it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mailgate_common import events


def wants(filter_events: list[str] | None, name: str) -> bool:
    return not filter_events or "*" in filter_events or name in filter_events


def render(event: events.Event, name: str, service_url: str | None) -> bytes:
    body: dict[str, Any] = {
        "serviceUrl": service_url or None,
        "account": event.account,
        "date": events.iso(event.occurred_at),
        **events.webhook_context(event),
        "event": name,
        "eventId": event.id,
        "data": event.webhook_data(),
    }
    return msgspec.json.encode(body)
