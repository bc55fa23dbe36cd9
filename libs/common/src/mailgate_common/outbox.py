"""Putting a message into the outbox: the one queuing path for every door.

``Outbox.enqueue`` commits the outbox row and only then returns, so a caller that
answers "queued" after it never lies.  The ``submission.queued`` event that
follows is only a wake-up call for the sender: the sender's poller finds every
due row by itself, so the event needs no transactional outbox.  An idempotency
key makes a retried submit return the first answer.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from mailgate_common import events, suppression
from mailgate_common.batching import Batcher
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.db.session import CONNECTION_ERRORS
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
    # Sending options with no column of their own: "dsn", "gateway", "sentMailPath".
    options: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
    # Look the idempotency key up before inserting (REST, where a retry with the
    # key is common).  False: only when the insert meets it (SMTP, where every
    # message carries a key and a retry is rare: a lookup per message would cost
    # a round trip each).
    lookup_key_first: bool = True


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


class RecipientsSuppressed(Exception):
    """Nothing was queued: these recipients are on the suppression list.

    The caller decides: refuse the message, or drop them and enqueue again.
    """

    def __init__(self, blocked: dict[str, str]) -> None:
        super().__init__(", ".join(blocked))
        self.blocked = blocked  # address as given -> reason


class UnknownAccount(Exception):
    """No such account (or it was deleted while the message was being composed)."""


class AccountCannotSend(Exception):
    """The account has no SMTP settings to send with."""


# One statement per message (many share a round trip and a commit); the checks
# guard the insert, so a bounce recorded or an account changed meanwhile cannot
# slip between them.
_INSERT = """
INSERT INTO outbox (id, account_id, source, message_id, envelope_from, envelope_to, subject, raw,
                    state, send_at, next_attempt_at, max_attempts, idempotency_key, request_hash,
                    reference, copy, options)
SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text[], $7::text, $8::bytea,
       $9::text, $10::timestamptz, $10::timestamptz, $11::int, $12::text, $13::text, $14::jsonb,
       $15::boolean, $17::jsonb
WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2::text AND smtp IS NOT NULL)
AND NOT EXISTS (
    SELECT 1 FROM suppressions
    WHERE address = ANY($16::text[]) AND (account_id IS NULL OR account_id = $2::text)
)
RETURNING id
"""
_SENDING_ACCOUNT = "SELECT id, name, email, smtp FROM accounts WHERE id = $1"
_FIND_IDEMPOTENT = """
SELECT id, message_id, send_at, request_hash FROM outbox WHERE account_id = $1 AND idempotency_key = $2
"""


async def sending_account(db: Database, account_id: str) -> Account | None:
    """The columns a door needs before composing (id, name, email, smtp), in one
    prepared statement outside any transaction: the hot path of every submit."""
    async with db.statement_connection() as conn:
        row = await conn.fetchrow(_SENDING_ACCOUNT, account_id)
    if row is None:
        return None
    return Account(id=row["id"], name=row["name"], email=row["email"], smtp=row["smtp"])


class Outbox:
    """One process's door to the outbox table: ``enqueue`` from REST or SMTP.

    Concurrent enqueues share one round trip and one commit (see batching.py):
    under load a submit's cost is mostly that round trip, and the WAL flush
    behind each commit is the slowest thing a durable submit waits for.
    """

    def __init__(self, db: Database, relay: EventRelay, max_batch: int = 100) -> None:
        self.db = db
        self.relay = relay
        self._inserts: Batcher[tuple[Any, ...], bool] = Batcher(
            "outbox", self._insert_many, max_batch, unsplittable=CONNECTION_ERRORS
        )

    async def enqueue(self, msg: NewMessage) -> Queued:
        """Commit the message to the outbox, then wake a sender; raises :class:`UnknownAccount`,
        :class:`AccountCannotSend`, :class:`RecipientsSuppressed`, :class:`IdempotencyConflict`."""
        request_hash = fingerprint(msg.request_fingerprint) if msg.request_fingerprint else None
        if msg.idempotency_key and msg.lookup_key_first:
            existing = await _find_idempotent(self.db, msg, request_hash)
            if existing is not None:
                SUBMISSIONS.labels(msg.source, "replayed").inc()
                return existing
        queue_id = new_queue_id()
        try:
            inserted = await self._inserts.submit((
                queue_id, msg.account_id, msg.source, msg.message_id, msg.envelope_from,
                msg.envelope_to, msg.subject, msg.raw, QUEUED, msg.send_at, msg.max_attempts,
                msg.idempotency_key, request_hash,
                json.dumps(msg.reference) if msg.reference is not None else None, msg.copy,
                [suppression.normalize(a) for a in msg.envelope_to], json.dumps(msg.options),
            ))
        except asyncpg.ForeignKeyViolationError as exc:
            raise UnknownAccount(msg.account_id) from exc
        except asyncpg.UniqueViolationError:
            # Two submits with one key raced; the loser answers what the winner stored.
            if msg.idempotency_key:
                existing = await _find_idempotent(self.db, msg, request_hash)
                if existing is not None:
                    return existing
            raise
        if not inserted:
            await _explain_refusal(self.db, msg)
            # Nothing is wrong any more (an entry was removed meanwhile): try again.
            return await self.enqueue(msg)
        SUBMISSIONS.labels(msg.source, "queued").inc()
        if msg.send_at <= events.utcnow():
            # Scheduled messages need no wake-up: the sender's poller finds them when due.
            self.relay.publish_hint(events.SubmissionQueued(
                account=msg.account_id,
                queue_id=queue_id,
                message_id=msg.message_id,
                send_at=msg.send_at,
                traceparent=msg.traceparent,
            ))
        return Queued(queue_id=queue_id, message_id=msg.message_id, send_at=msg.send_at)

    async def _insert_many(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        """Run the guarded insert for each row in one pipelined, atomic round trip;
        a row is False where its guard held it back."""
        async with self.db.statement_connection() as conn:
            returned = await conn.fetchmany(_INSERT, rows)
        inserted = {row["id"] for row in returned}
        return [row[0] in inserted for row in rows]


async def _explain_refusal(db: Database, msg: NewMessage) -> None:
    """Raise what stopped the guarded insert: the rare path, so plain queries."""
    account = await sending_account(db, msg.account_id)
    if account is None:
        raise UnknownAccount(msg.account_id)
    if not account.smtp:
        raise AccountCannotSend(msg.account_id)
    blocked = await suppression.suppressed(db, msg.account_id, msg.envelope_to)
    if blocked:
        raise RecipientsSuppressed(blocked)


async def _find_idempotent(db: Database, msg: NewMessage, request_hash: str | None) -> Queued | None:
    async with db.statement_connection() as conn:
        row = await conn.fetchrow(_FIND_IDEMPOTENT, msg.account_id, msg.idempotency_key)
    if row is None:
        return None
    if request_hash is not None and row["request_hash"] is not None and row["request_hash"] != request_hash:
        raise IdempotencyConflict(msg.idempotency_key)
    return Queued(queue_id=row["id"], message_id=row["message_id"], send_at=row["send_at"], replayed=True)
