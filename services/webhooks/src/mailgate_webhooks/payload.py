"""The EmailEngine-shaped webhook body for an event."""

from __future__ import annotations

from typing import Any

import msgspec

from mailgate_common import events


def wants(filter_events: list[str] | None, name: str) -> bool:
    return not filter_events or "*" in filter_events or name in filter_events


def render(event: events.Event, name: str, service_url: str | None) -> bytes:
    body: dict[str, Any] = {}
    if service_url:
        body["serviceUrl"] = service_url
    body.update(
        {
            "account": event.account,
            "date": events.iso(event.occurred_at),
            "event": name,
            "eventId": event.id,
            "data": event.webhook_data(),
        }
    )
    return msgspec.json.encode(body)
