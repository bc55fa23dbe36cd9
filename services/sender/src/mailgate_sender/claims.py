"""Claiming due messages: many at once, in one statement.

A claim moves ``queued|deferred -> sending`` under a fresh token, guarded and
with ``SKIP LOCKED``, so racing replicas never claim the same message.  Each
claim is one prepared statement on a pooled connection: one round trip, one
(group-committed) commit for the whole batch.

An account's connection limit is checked here, before claiming, not after: a
message claimed only to wait for its account's connection would take a place
that another account's message could use, so a burst from one slow,
connection-limited account would slow every other account down.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailgate_common import lifecycle
from mailgate_common.db import Database

_CLAIMABLE = ", ".join(f"'{state}'" for state in lifecycle.CLAIM.from_states)
# Only what a delivery needs (no subject, idempotency key, timestamps...).
_COLUMNS = """outbox.id, outbox.account_id, outbox.message_id, outbox.envelope_from, outbox.envelope_to,
              outbox.raw, outbox.attempts_made, outbox.max_attempts, outbox.reference, outbox.copy,
              outbox.next_attempt_at"""

# ``due`` takes the oldest due messages of accounts with a free connection here;
# ``capped`` keeps of each account no more than its free connections: the limits
# this process knows ($5..$7: account, connection limit, messages claimed and not
# yet through SMTP), else an account's explicit limit (first sight).  Rows locked
# by ``due`` and not kept are unlocked at commit, still due.
CLAIM_DUE_SQL = f"""
WITH due AS (
    SELECT id, account_id, next_attempt_at FROM outbox
    WHERE state IN ({_CLAIMABLE}) AND next_attempt_at <= now()
      AND NOT (attempts_made = 0 AND created_at > now() - make_interval(secs => $4))
      AND NOT EXISTS (SELECT 1 FROM accounts a
                      WHERE a.id = outbox.account_id AND a.throttled_until > now())
      AND account_id <> ALL($8::text[])
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), busy AS (
    SELECT * FROM unnest($5::text[], $6::int[], $7::int[]) AS b(account_id, connections, active)
), capped AS (
    SELECT due.id,
           row_number() OVER (PARTITION BY due.account_id ORDER BY due.next_attempt_at) AS n,
           COALESCE(busy.connections, (a.limits ->> 'connections')::int) - COALESCE(busy.active, 0) AS room
    FROM due
    LEFT JOIN busy ON busy.account_id = due.account_id
    LEFT JOIN accounts a ON a.id = due.account_id AND busy.connections IS NULL
), claimed AS (
    UPDATE outbox SET state = '{lifecycle.CLAIM.to_state}', claim_token = $1,
           claimed_until = now() + make_interval(secs => $2), updated_at = now()
    WHERE id IN (SELECT id FROM capped WHERE room IS NULL OR n <= room)
    RETURNING {_COLUMNS}
)
-- One row even when nothing was claimed, to tell how many due messages were left.
SELECT claimed.*, due_count.n FROM (SELECT count(*) AS n FROM due) due_count LEFT JOIN claimed ON true
"""
# Messages whose claimant stopped (crashed mid-send): taken over as they are,
# still "sending", so the attempt they were on is not counted twice.
RECLAIM_SQL = f"""
UPDATE outbox SET claim_token = $1, claimed_until = now() + make_interval(secs => $2), updated_at = now()
WHERE id IN (
    SELECT id FROM outbox
    WHERE state = '{lifecycle.SENDING}' AND claimed_until < now()
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    queue_id: str
    token: str
    account_id: str
    message_id: str
    envelope_from: str
    envelope_to: list[str]
    raw: bytes
    attempts_made: int
    max_attempts: int
    reference: dict[str, Any] | None
    copy: bool | None
    next_attempt_at: datetime
    claimed_at: float  # time.monotonic() when claimed


@dataclass(frozen=True, slots=True)
class Claimed:
    claims: list[Claim]
    # Due messages passed over because their account had no connection free.
    held_back: int = 0


class Claimer:
    def __init__(self, db: Database, hold_seconds: float) -> None:
        self._db = db
        self.hold = hold_seconds

    async def claim(
        self,
        limit: int,
        *,
        reclaim: bool = False,
        settle: float = 0.0,
        connections: Mapping[str, int] | None = None,
        active: Mapping[str, int] | None = None,
    ) -> Claimed:
        """Claim up to ``limit`` due messages; with ``reclaim``, also lapsed claims.

        ``settle`` leaves new messages younger than that many seconds alone: a
        poll that is not answering a wake-up lets a fresh message's own wake-up
        event (in flight, carrying its trace context) start it instead.
        ``connections`` (known connection limits by account) and ``active``
        (messages by account claimed here and not yet through SMTP) keep every
        account within its free connections.
        """
        connections = connections or {}
        active = active or {}
        accounts = list(connections.keys() | active.keys())
        limits = [connections.get(a) for a in accounts]
        counts = [active.get(a, 0) for a in accounts]
        full = [a for a, n, c in zip(accounts, limits, counts, strict=True) if n is not None and c >= n]
        token = secrets.token_hex(8)
        claimed_at = time.monotonic()
        async with self._db.statement_connection() as conn:
            rows = await conn.fetch(CLAIM_DUE_SQL, token, self.hold, limit, settle, accounts, limits, counts, full)
            due = rows[0][-1]
            rows = [r for r in rows if r[0] is not None]
            held_back = due - len(rows)
            if reclaim and len(rows) < limit:
                rows += await conn.fetch(RECLAIM_SQL, token, self.hold, limit - len(rows))
        return Claimed([
            Claim(r[0], token, r[1], r[2], r[3], list(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], claimed_at)
            for r in rows
        ], held_back)
