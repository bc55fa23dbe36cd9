"""Sender wake-ups: hints asked for while one is being written are merged (pure logic)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from mailgate_common import events
from mailgate_common.event_relay import EventRelay

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingBus:
    """Stands in for the broker connection: keeps what was published, slowly."""

    def __init__(self) -> None:
        self.published: list[tuple[events.Event, bool]] = []

    async def publish(self, event: events.Event, *, confirm: bool = True) -> None:
        self.published.append((event, confirm))
        await asyncio.sleep(0.01)


def queued(n: int, traceparent: str | None = None) -> events.SubmissionQueued:
    return events.SubmissionQueued(account="acct", queue_id=f"q{n}", message_id=f"<{n}@x>", send_at=NOW,
                                   traceparent=traceparent)


def test_a_burst_costs_two_publishes_and_no_message_is_forgotten() -> None:
    bus = RecordingBus()

    async def main() -> None:
        relay = EventRelay(None, bus)  # type: ignore[arg-type]  # hints never touch the database
        relay.publish_hint(queued(0, "00-a-b-01"))
        await asyncio.sleep(0)  # the first hint is on its way
        for n in range(1, 5):
            relay.publish_hint(queued(n, "00-c-d-01" if n == 2 else None))
        await relay.flush_hints()

    asyncio.run(main())
    assert [confirm for _, confirm in bus.published] == [False, False]  # wake-ups need no confirm
    first, merged = (event for event, _ in bus.published)
    assert isinstance(first, events.SubmissionQueued) and isinstance(merged, events.SubmissionQueued)
    assert first.queue_id == "q0" and first.also == {}
    assert merged.queue_id == "q1" and set(merged.also) == {"q2", "q3", "q4"}
    assert first.traces() == {"q0": "00-a-b-01"}
    assert merged.traces() == {"q2": "00-c-d-01"}


def test_a_merged_wake_up_survives_the_wire() -> None:
    event: Any = events.SubmissionQueued(account="a", queue_id="q1", message_id="<1@x>", send_at=NOW,
                                         traceparent="00-t-s-01", also={"q2": "00-u-v-01", "q3": ""})
    decoded = events.decode(events.encode(event))
    assert decoded == event
    assert decoded.traces() == {"q1": "00-t-s-01", "q2": "00-u-v-01"}
