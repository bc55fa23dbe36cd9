"""Claiming due messages (many at once, in one statement), and keeping the claims.

A claim moves ``queued|deferred -> sending`` under a fresh token, guarded and
with ``SKIP LOCKED``, so racing replicas never claim the same message.  Each
claim is one prepared statement on a pooled connection: one round trip, one
(group-committed) commit for the whole batch.

A claim lasts ``hold`` seconds and the heartbeat renews every claim this
process holds (one statement for all, every third of that), so a delivery
however long - a slow server, a large body - never outlives its claim.  A
claim that stopped being renewed belongs to a sender that crashed, hung or
was killed: it is taken over ("lapsed"), and counted, so a message that keeps
killing its sender ends failed instead of going round forever.  A process
never takes over its own live claims.  A claim found lost (the database was
away longer than the claim) abandons its delivery if the message body has not
started going out yet.

An account's connection limit and its "slow down" rest are checked here,
before claiming, not after: a message claimed only to wait for its account's
connection would take a place that another account's message could use.

Claims carry metadata only, and the body when it is small: a large body is
loaded right before its exchange (``load_body``), under the sender's byte budget.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mailgate_common import lifecycle
from mailgate_common.db import Database

log = logging.getLogger(__name__)

# Bodies up to this size come with the claim (no extra round trip for the usual message).
INLINE_BODY = 64 * 1024

_CLAIMABLE = ", ".join(f"'{state}'" for state in lifecycle.CLAIM.from_states)
# Only what a delivery needs (no subject, idempotency key, timestamps...).
_COLUMNS = f"""outbox.id, outbox.account_id, outbox.message_id, outbox.envelope_from, outbox.envelope_to,
              CASE WHEN octet_length(outbox.raw) <= {INLINE_BODY} THEN outbox.raw END,
              octet_length(outbox.raw), outbox.attempts_made, outbox.max_attempts, outbox.reference,
              outbox.copy, outbox.next_attempt_at, outbox.takeovers, outbox.options"""
_RESTING = "EXISTS (SELECT 1 FROM accounts a WHERE a.id = outbox.account_id AND a.throttled_until > now())"

# ``due`` takes the oldest due messages of accounts with a free connection here,
# ``lapsed`` (with $9) the claims nobody renews, except this process's own ($10);
# ``capped`` keeps of each account no more than its free connections: the limits
# this process knows ($5..$7: account, connection limit, messages claimed and not
# yet through SMTP), else an account's explicit limit (first sight).  Rows locked
# and not kept are unlocked at commit, still due.
CLAIM_SQL = f"""
WITH due AS (
    SELECT id, account_id, next_attempt_at FROM outbox
    WHERE state IN ({_CLAIMABLE}) AND next_attempt_at <= now()
      AND NOT (attempts_made = 0 AND created_at > now() - make_interval(secs => $4))
      AND NOT {_RESTING}
      AND account_id <> ALL($8::text[])
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), lapsed AS (
    SELECT id, account_id, next_attempt_at FROM outbox
    WHERE $9 AND state = '{lifecycle.SENDING}' AND claimed_until < now()
      AND claim_token <> ALL($10::text[])
      AND NOT {_RESTING}
      AND account_id <> ALL($8::text[])
    ORDER BY claimed_until
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT * FROM due UNION ALL SELECT * FROM lapsed
), busy AS (
    SELECT * FROM unnest($5::text[], $6::int[], $7::int[]) AS b(account_id, connections, active)
), capped AS (
    SELECT c.id, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.account_id ORDER BY c.next_attempt_at) AS n,
           COALESCE(busy.connections, (a.limits ->> 'connections')::int) - COALESCE(busy.active, 0) AS room
    FROM candidates c
    LEFT JOIN busy ON busy.account_id = c.account_id
    LEFT JOIN accounts a ON a.id = c.account_id AND busy.connections IS NULL
), kept AS (
    SELECT id, row_number() OVER (ORDER BY next_attempt_at) AS k
    FROM capped WHERE room IS NULL OR n <= room
), claimed AS (
    -- A lapsed claim is still "sending": taken over as it is (its attempt is not
    -- counted twice), and the takeover is counted.
    UPDATE outbox SET state = '{lifecycle.CLAIM.to_state}', claim_token = $1,
           claimed_until = now() + make_interval(secs => $2), updated_at = now(),
           takeovers = outbox.takeovers + (outbox.state = '{lifecycle.SENDING}')::int
    WHERE id IN (SELECT id FROM kept WHERE k <= $3)
    RETURNING {_COLUMNS}
)
-- One row even when nothing was claimed, to tell how many due messages were left.
SELECT claimed.*, counted.n FROM (SELECT count(*) AS n FROM candidates) counted LEFT JOIN claimed ON true
"""

RENEW_SQL = f"""
UPDATE outbox SET claimed_until = now() + make_interval(secs => $3)
FROM unnest($1::text[], $2::text[]) AS held(id, token)
WHERE outbox.id = held.id AND outbox.claim_token = held.token AND outbox.state = '{lifecycle.SENDING}'
RETURNING outbox.id
"""

BODY_SQL = "SELECT raw FROM outbox WHERE id = $1 AND claim_token = $2"


@dataclass(eq=False, slots=True)
class Hold:
    """A claim this process holds: renewed by the heartbeat until its delivery is over."""

    queue_id: str
    token: str
    # The delivery, cancelled if the claim is lost while it is "waiting".
    task: asyncio.Task[Any] | None = None
    # "waiting" (for its turn, a connection, the server's replies): abandoned if
    # the claim is lost; "sending": the body started going out and the server
    # may accept it whatever we do next, so it is finished, never abandoned;
    # "over": the outcome is known (its record's guard tells whether the claim was kept).
    phase: Literal["waiting", "sending", "over"] = "waiting"
    lost: bool = False
    called_off: bool = False

    def call_off(self) -> bool:
        """Cancels the delivery if it is still "waiting"; True if it was."""
        if self.phase != "waiting" or self.task is None:
            return False
        self.called_off = True
        self.task.cancel()
        return True

    def may_send(self) -> bool:
        """Asked right before the first byte of the body: past it, the delivery is never abandoned."""
        if self.lost:
            return False
        self.phase = "sending"
        return True


@dataclass(frozen=True, slots=True)
class Claim:
    queue_id: str
    token: str
    account_id: str
    message_id: str
    envelope_from: str
    envelope_to: list[str]
    raw: bytes | None  # inline when small; else None and loaded by ``Claimer.load_body``
    size: int | None  # bytes of the body; None if it is gone (pruned)
    attempts_made: int
    max_attempts: int
    reference: dict[str, Any] | None
    copy: bool | None
    next_attempt_at: datetime
    takeovers: int  # times a claimant died holding this message (this claim included)
    options: dict[str, Any]  # "dsn", "gateway", ... (OutboxMessage.options)
    hold: Hold = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Claimed:
    claims: list[Claim]
    # Due messages passed over because their account had no connection free.
    held_back: int = 0


class BodyGone(Exception):
    """The message has no body any more (pruned by retention)."""


class Claimer:
    def __init__(self, db: Database, hold_seconds: float) -> None:
        self._db = db
        self.hold = hold_seconds
        self.held: set[Hold] = set()

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
        account within its free connections.  Every claim returned is held
        (renewed) until ``release``.
        """
        connections = connections or {}
        active = active or {}
        accounts = list(connections.keys() | active.keys())
        limits = [connections.get(a) for a in accounts]
        counts = [active.get(a, 0) for a in accounts]
        full = [a for a, n, c in zip(accounts, limits, counts, strict=True) if n is not None and c >= n]
        token = secrets.token_hex(8)
        async with self._db.statement_connection() as conn:
            rows = await conn.fetch(CLAIM_SQL, token, self.hold, limit, settle, accounts, limits, counts, full,
                                    reclaim, self._live_tokens())
        candidates = rows[0][-1]
        rows = [r for r in rows if r[0] is not None]
        claims = []
        for r in rows:
            hold = Hold(r[0], token)
            self.held.add(hold)
            claims.append(Claim(r[0], token, r[1], r[2], r[3], list(r[4]), r[5], r[6], r[7], r[8], r[9], r[10],
                                r[11], r[12], r[13] or {}, hold))
            if r[12]:
                log.warning("%s taken over from a sender that stopped (takeover %d)", r[0], r[12])
        return Claimed(claims, candidates - len(rows))

    def _live_tokens(self) -> list[str]:
        return list({h.token for h in self.held if not h.lost})

    def release(self, claim: Claim) -> None:
        """The delivery is over (recorded, handed back, or crashed): stop renewing its claim."""
        self.held.discard(claim.hold)

    async def load_body(self, claim: Claim) -> bytes | None:
        """The message body, if the claim is still ours (None if not); ``BodyGone`` if it was pruned."""
        async with self._db.statement_connection() as conn:
            row = await conn.fetchrow(BODY_SQL, claim.queue_id, claim.token)
        if row is None:
            return None
        if row[0] is None:
            raise BodyGone(claim.queue_id)
        raw: bytes = row[0]
        return raw

    async def renew(self) -> None:
        """One heartbeat: extend every claim held; those found lost abandon their delivery if they can."""
        holds = [h for h in self.held if not h.lost]
        if not holds:
            return
        async with self._db.statement_connection() as conn:
            rows = await conn.fetch(RENEW_SQL, [h.queue_id for h in holds], [h.token for h in holds], self.hold)
        renewed = {row[0] for row in rows}
        for hold in holds:
            if hold.queue_id in renewed or hold not in self.held:
                continue  # renewed, or its delivery ended while we asked
            hold.lost = True
            if hold.call_off():
                log.warning("claim on %s lost before its message was sent: delivery abandoned", hold.queue_id)
            elif hold.phase == "sending":
                log.warning("claim on %s lost while its message was being sent", hold.queue_id)

    async def heartbeat(self) -> None:
        """Renew the claims held, every third of their lifetime, until cancelled."""
        while True:
            await asyncio.sleep(self.hold / 3)
            try:
                await self.renew()
            except Exception as exc:
                # The claims may lapse if this lasts; the guards keep them from being finished twice.
                log.warning("renewing %d claims failed: %r", len(self.held), exc)
