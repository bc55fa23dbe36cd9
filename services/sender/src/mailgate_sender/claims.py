"""Claiming due messages: many at once, in one statement.

A claim moves ``queued|deferred -> sending`` under a fresh token, guarded and
with ``SKIP LOCKED``, so racing replicas never claim the same message.  Each
claim is one prepared statement on a pooled connection: one round trip, one
(group-committed) commit for the whole batch.
"""

from __future__ import annotations

import secrets
import time
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

CLAIM_DUE_SQL = f"""
UPDATE outbox SET state = '{lifecycle.CLAIM.to_state}', claim_token = $1,
       claimed_until = now() + make_interval(secs => $2), updated_at = now()
WHERE id IN (
    SELECT id FROM outbox
    WHERE state IN ({_CLAIMABLE}) AND next_attempt_at <= now()
      AND NOT (attempts_made = 0 AND created_at > now() - make_interval(secs => $4))
      AND NOT EXISTS (SELECT 1 FROM accounts a
                      WHERE a.id = outbox.account_id AND a.throttled_until > now())
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
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


class Claimer:
    def __init__(self, db: Database, hold_seconds: float) -> None:
        self._db = db
        self.hold = hold_seconds

    async def claim(self, limit: int, *, reclaim: bool = False, settle: float = 0.0) -> list[Claim]:
        """Claim up to ``limit`` due messages; with ``reclaim``, also lapsed claims.

        ``settle`` leaves new messages younger than that many seconds alone: a
        poll that is not answering a wake-up lets a fresh message's own wake-up
        event (in flight, carrying its trace context) start it instead.
        """
        token = secrets.token_hex(8)
        claimed_at = time.monotonic()
        async with self._db.statement_connection() as conn:
            rows = await conn.fetch(CLAIM_DUE_SQL, token, self.hold, limit, settle)
            if reclaim and len(rows) < limit:
                rows += await conn.fetch(RECLAIM_SQL, token, self.hold, limit - len(rows))
        return [
            Claim(r[0], token, r[1], r[2], r[3], list(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], claimed_at)
            for r in rows
        ]
