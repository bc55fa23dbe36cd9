"""Putting a message into the outbox: the one queuing path for every door.

``Outbox.enqueue`` commits the outbox row and only then returns, so a caller that
answers "queued" after it never lies.  The ``submission.queued`` event that
follows is only a wake-up call for the sender: the sender's poller finds every
due row by itself, so the event needs no transactional outbox.  An idempotency
key makes a retried submit return the first answer.

``Outbox.enqueue_many`` commits many messages (a mail merge) in one transaction
with one wake-up; a row its guard holds back comes back as :class:`HeldBack`
instead of failing the others.
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
    # Sending options with no column of their own: "dsn", "gateway", "sentMailPath",
    # "trackOpens", "trackClicks", "baseUrl", "listId".
    options: dict[str, Any] = field(default_factory=dict)
    traceparent: str | None = None
    # Look the idempotency key up before inserting (REST, where a retry with the
    # key is common).  False: only when the insert meets it (SMTP, where every
    # message carries a key and a retry is rare: a lookup per message would cost
    # a round trip each).
    lookup_key_first: bool = True
    # fingerprint(request_fingerprint) worked out by the caller: a merge's rows share
    # one request, which is hashed once rather than once per row.
    request_hash: str | None = None

    def hash_of_request(self) -> str | None:
        if self.request_hash is not None:
            return self.request_hash
        return fingerprint(self.request_fingerprint) if self.request_fingerprint else None


@dataclass(frozen=True)
class Queued:
    queue_id: str
    message_id: str
    send_at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class HeldBack:
    """``enqueue_many``: this message was not queued, its recipients are suppressed."""

    blocked: dict[str, str]  # address as given -> reason


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
_FIND_IDEMPOTENT_MANY = """
SELECT idempotency_key, id, message_id, send_at, request_hash FROM outbox
WHERE account_id = $1 AND idempotency_key = ANY($2::text[])
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
        request_hash = msg.hash_of_request()
        if msg.idempotency_key and msg.lookup_key_first:
            existing = await _find_idempotent(self.db, msg, request_hash)
            if existing is not None:
                SUBMISSIONS.labels(msg.source, "replayed").inc()
                return existing
        queue_id = new_queue_id()
        try:
            inserted = await self._inserts.submit(_row(queue_id, msg, request_hash))
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

    async def enqueue_many(self, msgs: list[NewMessage]) -> list[Queued | HeldBack]:
        """Commit ``msgs`` (one account's) in one transaction, then wake a sender once.

        Either every message the guard lets through is committed, or (on an
        exception) none is.  One answer per message, in order: :class:`Queued` (``replayed`` where its
        idempotency key was used before), or :class:`HeldBack` where the guarded
        insert met a suppressed recipient.  Raises, queuing nothing,
        :class:`UnknownAccount`, :class:`AccountCannotSend` (when nothing could be
        queued for that reason), :class:`IdempotencyConflict`.
        """
        if not msgs:
            return []
        account = msgs[0].account_id
        if any(m.account_id != account for m in msgs):
            raise ValueError("enqueue_many takes the messages of one account")
        try:
            answers = await self._commit_many(account, msgs)
        except asyncpg.UniqueViolationError:
            # A concurrent retry with the same keys committed first: answer what it stored.
            answers = await self._commit_many(account, msgs, every_key=True)
        queued = [a for a in answers if isinstance(a, Queued) and not a.replayed]
        SUBMISSIONS.labels(msgs[0].source, "queued").inc(len(queued))
        SUBMISSIONS.labels(msgs[0].source, "replayed").inc(
            sum(1 for a in answers if isinstance(a, Queued) and a.replayed))
        due = [(a, m) for a, m in zip(answers, msgs, strict=True)
               if isinstance(a, Queued) and not a.replayed and a.send_at <= events.utcnow()]
        if due:
            # One wake-up for the lot: the sender claims due rows in batches by itself.
            first, msg = due[0]
            self.relay.publish_hint(events.SubmissionQueued(
                account=account, queue_id=first.queue_id, message_id=first.message_id,
                send_at=first.send_at, traceparent=msg.traceparent,
            ))
        return answers

    async def _commit_many(self, account: str, msgs: list[NewMessage],
                           every_key: bool = False) -> list[Queued | HeldBack]:
        hashes = [m.hash_of_request() for m in msgs]
        answers: list[Queued | HeldBack | None] = [None] * len(msgs)
        keyed = {m.idempotency_key: i for i, m in enumerate(msgs)
                 if m.idempotency_key and (m.lookup_key_first or every_key)}
        async with self.db.statement_connection() as conn:
            if keyed:
                found = await conn.fetch(_FIND_IDEMPOTENT_MANY, account, list(keyed))
                for row in found:
                    index = keyed[row["idempotency_key"]]
                    answers[index] = _replayed(row, msgs[index].idempotency_key, hashes[index])
            todo = [i for i, answer in enumerate(answers) if answer is None]
            rows = [_row(new_queue_id(), msgs[i], hashes[i]) for i in todo]
            returned = []
            if rows:
                try:
                    async with conn.transaction():
                        returned = await conn.fetchmany(_INSERT, rows)
                except asyncpg.ForeignKeyViolationError as exc:
                    raise UnknownAccount(account) from exc
        inserted = {row["id"] for row in returned}
        held = []
        for i, row in zip(todo, rows, strict=True):
            if row[0] in inserted:
                msg = msgs[i]
                answers[i] = Queued(queue_id=row[0], message_id=msg.message_id, send_at=msg.send_at)
            else:
                held.append(i)
        if held:
            await self._explain_held(account, msgs, held, answers)
        return [a for a in answers if a is not None]

    async def _explain_held(self, account: str, msgs: list[NewMessage], held: list[int],
                            answers: list[Queued | HeldBack | None]) -> None:
        """Fill in why the guard held rows back; rows nothing holds back any more are queued now."""
        row = await sending_account(self.db, account)
        if row is None:
            raise UnknownAccount(account)
        if not row.smtp:
            raise AccountCannotSend(account)
        blocked = await suppression.suppressed(self.db, account, {a for i in held for a in msgs[i].envelope_to})
        retry = []
        for i in held:
            mine = {a: blocked[a] for a in msgs[i].envelope_to if a in blocked}
            if mine:
                answers[i] = HeldBack(mine)
            else:
                retry.append(i)
        if retry:
            # Their suppression was removed meanwhile (the rare race): try them again.
            again = await self._commit_many(account, [msgs[i] for i in retry], every_key=True)
            for i, answer in zip(retry, again, strict=True):
                answers[i] = answer

    async def find_idempotent_many(self, account: str, keys: list[str],
                                   request_hash: str | None) -> dict[str, Queued]:
        """{key: what it queued} for the keys used before; raises :class:`IdempotencyConflict`
        if one was used for a different request."""
        if not keys:
            return {}
        async with self.db.statement_connection() as conn:
            rows = await conn.fetch(_FIND_IDEMPOTENT_MANY, account, keys)
        return {row["idempotency_key"]: _replayed(row, row["idempotency_key"], request_hash) for row in rows}

    async def _insert_many(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        """Run the guarded insert for each row in one pipelined, atomic round trip;
        a row is False where its guard held it back."""
        async with self.db.statement_connection() as conn:
            returned = await conn.fetchmany(_INSERT, rows)
        inserted = {row["id"] for row in returned}
        return [row[0] in inserted for row in rows]


def _row(queue_id: str, msg: NewMessage, request_hash: str | None) -> tuple[Any, ...]:
    """The guarded insert's arguments for ``msg``."""
    return (
        queue_id, msg.account_id, msg.source, msg.message_id, msg.envelope_from,
        msg.envelope_to, msg.subject, msg.raw, QUEUED, msg.send_at, msg.max_attempts,
        msg.idempotency_key, request_hash,
        json.dumps(msg.reference) if msg.reference is not None else None, msg.copy,
        [suppression.normalize(a) for a in msg.envelope_to], json.dumps(msg.options),
    )


def _replayed(row: asyncpg.Record, key: str | None, request_hash: str | None) -> Queued:
    if request_hash is not None and row["request_hash"] is not None and row["request_hash"] != request_hash:
        raise IdempotencyConflict(key)
    return Queued(queue_id=row["id"], message_id=row["message_id"], send_at=row["send_at"], replayed=True)


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
    return _replayed(row, msg.idempotency_key, request_hash)
