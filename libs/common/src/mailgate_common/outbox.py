"""Putting a message into the outbox: the one queuing path for every door.

``enqueue`` commits the outbox row and only then returns, so a caller that
answers "queued" after it never lies.  The ``submission.queued`` event that
follows is only a wake-up call for the sender: the sender's poller finds every
due row by itself, so the event needs no transactional outbox.  An idempotency
key makes a retried submit return the first answer.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import OutboxMessage
from mailgate_common.event_relay import EventRelay
from mailgate_common.lifecycle import QUEUED

SUBMISSIONS = Counter(
    "mailgate_submissions_total", "Messages committed to the outbox", ["source", "result"]
)


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


@dataclass
class NewMessage:
    account_id: str
    message_id: str
    envelope_from: str
    envelope_to: list[str]
    subject: str | None
    raw: bytes
    send_at: datetime
    max_attempts: int
    source: str = "api"
    idempotency_key: str | None = None
    request_fingerprint: bytes | None = None
    reference: dict[str, Any] | None = None
    copy: bool | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class Queued:
    queue_id: str
    message_id: str
    send_at: datetime
    replayed: bool = False


def new_queue_id() -> str:
    """Time-ordered hex id, the shape of EmailEngine's queue ids."""
    return f"{time.time_ns() // 1_000_000:x}{secrets.token_hex(4)}"


def fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def enqueue(db: Database, relay: EventRelay, msg: NewMessage) -> Queued:
    request_hash = fingerprint(msg.request_fingerprint) if msg.request_fingerprint else None
    if msg.idempotency_key:
        existing = await _find_idempotent(db, msg, request_hash)
        if existing is not None:
            SUBMISSIONS.labels(msg.source, "replayed").inc()
            return existing
    queue_id = new_queue_id()
    event = events.SubmissionQueued(
        account=msg.account_id,
        queue_id=queue_id,
        message_id=msg.message_id,
        send_at=msg.send_at,
        traceparent=msg.traceparent,
    )
    try:
        async with db.transaction() as session:
            # Core INSERT: the ORM's unit of work costs more than the statement here.
            await session.execute(
                insert(OutboxMessage).values(
                    id=queue_id,
                    account_id=msg.account_id,
                    source=msg.source,
                    message_id=msg.message_id,
                    envelope_from=msg.envelope_from,
                    envelope_to=msg.envelope_to,
                    subject=msg.subject,
                    raw=msg.raw,
                    state=QUEUED,
                    send_at=msg.send_at,
                    next_attempt_at=msg.send_at,
                    max_attempts=msg.max_attempts,
                    idempotency_key=msg.idempotency_key,
                    request_hash=request_hash,
                    reference=msg.reference,
                    copy=msg.copy,
                )
            )
    except IntegrityError:
        # Two submits with one key raced; the loser answers what the winner stored.
        if msg.idempotency_key:
            existing = await _find_idempotent(db, msg, request_hash)
            if existing is not None:
                return existing
        raise
    SUBMISSIONS.labels(msg.source, "queued").inc()
    await relay.publish_hint(event)
    return Queued(queue_id=queue_id, message_id=msg.message_id, send_at=msg.send_at)


async def _find_idempotent(db: Database, msg: NewMessage, request_hash: str | None) -> Queued | None:
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(
                    OutboxMessage.id,
                    OutboxMessage.message_id,
                    OutboxMessage.send_at,
                    OutboxMessage.request_hash,
                ).where(
                    OutboxMessage.account_id == msg.account_id,
                    OutboxMessage.idempotency_key == msg.idempotency_key,
                )
            )
        ).first()
    if row is None:
        return None
    if request_hash is not None and row.request_hash is not None and row.request_hash != request_hash:
        raise IdempotencyConflict(msg.idempotency_key)
    return Queued(queue_id=row.id, message_id=row.message_id, send_at=row.send_at, replayed=True)
