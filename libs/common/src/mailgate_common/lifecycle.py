"""Message lifecycle as data: the states and the only moves between them.

    queued ──claim──► sending ──sent──► sent
      │  ▲              │  ├───fail──► failed
      │  │              │  └─unknown─► unknown  (no answer after the message was
      │  │              │     written: it may have been delivered, so it is not
      │  │              │     retried unless the operator opted in)
      │  └───release────┤   (a sending limit or the server's "slow down":
      │                 │    no attempt is spent, the message just waits)
      │                 └─defer──► deferred ──claim──► sending …
      └──cancel──► cancelled ◄──cancel── deferred

A transition is applied as a guarded UPDATE (``WHERE state IN from_states``),
so a redelivered event or a second replica can never move a message backwards
or send a message that already reached ``sent``.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
DEFERRED = "deferred"
FAILED = "failed"
CANCELLED = "cancelled"
UNKNOWN = "unknown"

OUTBOX_STATES: tuple[str, ...] = (QUEUED, SENDING, SENT, DEFERRED, FAILED, CANCELLED, UNKNOWN)
FINAL_STATES = frozenset({SENT, FAILED, CANCELLED, UNKNOWN})


@dataclass(frozen=True)
class Transition:
    name: str
    from_states: tuple[str, ...]
    to_state: str


CLAIM = Transition("claim", (QUEUED, DEFERRED), SENDING)
MARK_SENT = Transition("sent", (SENDING,), SENT)
DEFER = Transition("defer", (SENDING,), DEFERRED)
FAIL = Transition("fail", (SENDING,), FAILED)
MARK_UNKNOWN = Transition("unknown", (SENDING,), UNKNOWN)
CANCEL = Transition("cancel", (QUEUED, DEFERRED), CANCELLED)
RELEASE = Transition("release", (SENDING,), QUEUED)

TRANSITIONS: tuple[Transition, ...] = (CLAIM, MARK_SENT, DEFER, FAIL, MARK_UNKNOWN, CANCEL, RELEASE)


# Webhook deliveries: pending → delivered | retrying → … → delivered | failed.
WEBHOOK_PENDING = "pending"
WEBHOOK_RETRYING = "retrying"
WEBHOOK_DELIVERED = "delivered"
WEBHOOK_FAILED = "failed"
WEBHOOK_STATES: tuple[str, ...] = (
    WEBHOOK_PENDING,
    WEBHOOK_RETRYING,
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
)
