"""One delivery attempt of one outbox message, from claim to recorded outcome.

    claim (guarded: queued|deferred -> sending)
      -> load account + decrypt SMTP credentials
      -> SMTP transaction
      -> one transaction: attempt row + guarded state change + staged events
      -> publish the events

A message is only ever finished by the sender still holding its claim, and
``sent`` is final, so redelivered events and racing replicas never send twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, lifecycle
from mailgate_common.backoff import backoff_delay
from mailgate_common.crypto import CredentialError, Sealer, with_secret
from mailgate_common.db import Database
from mailgate_common.db.models import Account, DeliveryAttempt, OutboxMessage
from mailgate_common.event_relay import EventRelay, stage
from mailgate_common.settings import Settings
from mailgate_sender.limits import Limits, acquire, effective_limits, is_slow_down, throttle_delay
from mailgate_sender.outcome import Outcome
from mailgate_sender.smtp_client import SmtpPool, SmtpServer

log = logging.getLogger(__name__)
tracer = trace.get_tracer("mailgate.sender")

ATTEMPTS = Counter("mailgate_send_attempts_total", "SMTP delivery attempts", ["result"])
SEND_SECONDS = Histogram("mailgate_send_seconds", "Time of one SMTP delivery attempt")
HELD = Counter("mailgate_send_held_total", "Messages held back without an attempt", ["reason"])
QUEUE_LAG = Histogram(
    "mailgate_send_lag_seconds",
    "Delay between a message being due and its attempt starting",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

CLAIM_DUE_SQL = text(
    """
    UPDATE outbox SET state = 'sending', claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold), updated_at = now()
    WHERE id IN (
        SELECT id FROM outbox
        WHERE (state IN ('queued', 'deferred') AND next_attempt_at <= now())
          AND NOT EXISTS (SELECT 1 FROM accounts a
                          WHERE a.id = outbox.account_id AND a.throttled_until > now())
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING outbox.*
    """
)
RECLAIM_SQL = text(
    """
    UPDATE outbox SET claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold), updated_at = now()
    WHERE id IN (
        SELECT id FROM outbox
        WHERE state = 'sending' AND claimed_until < now()
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING outbox.*
    """
)
ACCOUNT_TTL = 5.0  # seconds an account's SMTP settings are reused before re-reading


@dataclass(frozen=True)
class Claim:
    queue_id: str
    token: str
    row: OutboxMessage


class Deliverer:
    def __init__(self, settings: Settings, db: Database, relay: EventRelay) -> None:
        self.settings = settings
        self.db = db
        self.relay = relay
        self.pool = SmtpPool(settings.smtp_timeout, settings.sender_concurrency, settings.smtp_helo_name)
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        self._accounts: dict[str, tuple[float, Account | None]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    # --- claiming ---------------------------------------------------------

    async def claim(self, queue_id: str) -> Claim | None:
        """Claim one message if it is due and nobody holds it."""
        token = secrets.token_hex(8)
        async with self.db.transaction(durable=False) as session:
            result = await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == queue_id,
                    OutboxMessage.state.in_(lifecycle.CLAIM.from_states),
                    OutboxMessage.next_attempt_at <= events.utcnow(),
                )
                .values(
                    state=lifecycle.CLAIM.to_state,
                    claim_token=token,
                    claimed_until=events.utcnow() + timedelta(seconds=self.settings.sender_claim_timeout),
                )
                .returning(OutboxMessage)
            )
            row = result.scalar_one_or_none()
        return Claim(queue_id, token, row) if row is not None else None

    async def claim_due(self, limit: int) -> list[Claim]:
        """Claim due messages, and take over ones whose claimant stopped renewing."""
        token = secrets.token_hex(8)
        params = {"token": token, "hold": self.settings.sender_claim_timeout, "limit": limit}
        columns = CLAIM_DUE_SQL.columns(*OutboxMessage.__table__.c)
        async with self.db.transaction(durable=False) as session:
            rows = list(await session.scalars(select(OutboxMessage).from_statement(columns), params))
            if len(rows) < limit:
                params["limit"] = limit - len(rows)
                reclaim = RECLAIM_SQL.columns(*OutboxMessage.__table__.c)
                rows += list(await session.scalars(select(OutboxMessage).from_statement(reclaim), params))
        return [Claim(row.id, token, row) for row in rows]

    async def _account(self, account_id: str) -> Account | None:
        now = time.monotonic()
        cached = self._accounts.get(account_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.db.sessions() as session:
            account = await session.get(Account, account_id)
        self._accounts[account_id] = (now + ACCOUNT_TTL, account)
        return account

    # --- delivering -------------------------------------------------------

    async def deliver(self, claim: Claim) -> None:
        # One session for the whole attempt: its connection is taken before DATA,
        # so the outcome is written the moment the server answers (see _record).
        async with self.db.sessions() as session:
            await self._deliver(claim, session)

    async def _deliver(self, claim: Claim, session: AsyncSession) -> None:
        started = events.utcnow()
        row = claim.row
        account = await self._account(row.account_id)
        QUEUE_LAG.observe(max(0.0, (started - row.next_attempt_at).total_seconds()))
        server: SmtpServer | None = None
        if account is None or not account.smtp:
            outcome = Outcome("permanent", "Account has no SMTP settings", error_code="ESETTINGS")
        else:
            try:
                secret = (
                    self.sealer.open(account.credentials).get("smtp") if account.credentials else None
                )
                server = SmtpServer.from_account(with_secret(account.smtp, secret))
            except (CredentialError, KeyError, ValueError) as exc:
                outcome = Outcome("permanent", f"Invalid SMTP settings: {exc}", error_code="ESETTINGS")
            else:
                limits = effective_limits(account.limits, server.host)
                if limits.rates:
                    wait_until = await self._acquire(account.id, limits)
                    if wait_until is not None:
                        HELD.labels("limit").inc()
                        await self._hold(claim, wait_until, f"sending limit reached until {events.iso(wait_until)}")
                        return
                async with self._connection_slot(account.id, limits.connections):
                    with SEND_SECONDS.time(), tracer.start_as_current_span(
                        "smtp deliver",
                        kind=trace.SpanKind.CLIENT,
                        attributes={"mailgate.queue_id": row.id, "server.address": server.label},
                    ) as span:
                        outcome = await self.pool.deliver(
                            server, row.envelope_from, list(row.envelope_to), row.raw,
                            before_data=session.connection,
                        )
                        span.set_attribute("mailgate.outcome", outcome.kind)
                if is_slow_down(outcome):
                    HELD.labels("throttled").inc()
                    until = await self._throttle(account, outcome)
                    await self._hold(claim, until, outcome.response, outcome, server, started)
                    return
                if outcome.kind == "sent" and account.throttle_level:
                    await self._unthrottle(account.id)
        ATTEMPTS.labels(outcome.kind).inc()
        await self._record(session, claim, row, account, server, outcome, started)

    # --- politeness -------------------------------------------------------

    async def _acquire(self, account_id: str, limits: Limits) -> datetime | None:
        async with self.db.sessions() as session:
            transaction = await session.begin()
            wait_until = await acquire(session, account_id, limits)
            if wait_until is None:
                await transaction.commit()
            else:
                await transaction.rollback()
        return wait_until

    def _connection_slot(
        self, account_id: str, connections: int | None
    ) -> contextlib.AbstractAsyncContextManager[object]:
        if not connections:
            return contextlib.nullcontext()
        slot = self._slots.get(account_id)
        if slot is None:
            slot = self._slots[account_id] = asyncio.Semaphore(connections)
        return slot

    async def _throttle(self, account: Account, outcome: Outcome) -> datetime:
        """The server said "slow down": leave the whole account alone for a while."""
        level = account.throttle_level + 1
        until = events.utcnow() + timedelta(
            seconds=throttle_delay(level, self.settings.throttle_base, self.settings.throttle_max)
        )
        async with self.db.transaction() as session:
            await session.execute(
                update(Account).where(Account.id == account.id)
                .values(throttled_until=until, throttle_level=level)
            )
        self._accounts.pop(account.id, None)
        log.warning("account %s throttled until %s: %s", account.id, events.iso(until), outcome.response)
        return until

    async def _unthrottle(self, account_id: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(Account).where(Account.id == account_id).values(throttled_until=None, throttle_level=0)
            )
        self._accounts.pop(account_id, None)

    async def _hold(
        self,
        claim: Claim,
        until: datetime,
        reason: str,
        outcome: Outcome | None = None,
        server: SmtpServer | None = None,
        started: datetime | None = None,
    ) -> None:
        """Hand the message back without spending an attempt; push the account's
        other due messages behind the same wait so they are not claimed in vain."""
        row = claim.row
        async with self.db.transaction() as session:
            released = await session.scalar(
                update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.claim_token == claim.token,
                       OutboxMessage.state.in_(lifecycle.RELEASE.from_states))
                .values(state=lifecycle.RELEASE.to_state, claim_token=None, claimed_until=None,
                        next_attempt_at=until, last_error=reason)
                .returning(OutboxMessage.id)
            )
            if released is None:
                return
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.account_id == row.account_id,
                       OutboxMessage.state.in_(lifecycle.CLAIM.from_states),
                       OutboxMessage.next_attempt_at < until)
                .values(next_attempt_at=until, last_error=reason)
                .execution_options(synchronize_session=False)
            )
            if outcome is not None:
                # The exchange happened; keep it in the message's history, uncounted.
                session.add(DeliveryAttempt(
                    queue_id=row.id, attempt=row.attempts_made + 1, outcome="throttled",
                    server=server.label if server else None, smtp_code=outcome.code,
                    smtp_status=outcome.status, response=outcome.response, error=reason,
                    started_at=started or events.utcnow(),
                ))

    async def _record(
        self,
        session: AsyncSession,
        claim: Claim,
        row: OutboxMessage,
        account: Account | None,
        server: SmtpServer | None,
        outcome: Outcome,
        started: datetime,
    ) -> None:
        attempt = row.attempts_made + 1
        envelope = events.Envelope(from_=row.envelope_from, to=list(row.envelope_to))
        staged: list[events.Event] = []
        next_attempt: datetime | None = None
        if outcome.kind == "sent":
            transition = lifecycle.MARK_SENT
            staged.append(
                events.MessageSent(
                    account=row.account_id,
                    queue_id=row.id,
                    message_id=row.message_id,
                    response=outcome.response,
                    envelope=envelope,
                )
            )
            copy = row.copy if row.copy is not None else account.copy if account else None
            if account is not None and account.imap and copy is not False:
                staged.append(events.ImapAppendSent(account=row.account_id, queue_id=row.id))
            if row.reference and account is not None and account.imap:
                # A reply or forward marks the message it answered, as mail clients do.
                forward = row.reference.get("action") == "forward"
                staged.append(events.ImapSetFlags(
                    account=row.account_id, message=str(row.reference.get("message", "")),
                    add=["$Forwarded" if forward else "\\Answered"],
                ))
        else:
            retry = outcome.kind == "temporary" and attempt < row.max_attempts
            if retry:
                transition = lifecycle.DEFER
                next_attempt = events.utcnow() + timedelta(
                    seconds=backoff_delay(
                        attempt,
                        self.settings.delivery_retry_base,
                        self.settings.delivery_retry_max,
                    )
                )
            else:
                transition = lifecycle.FAIL
            staged.append(
                events.MessageDeliveryError(
                    account=row.account_id,
                    queue_id=row.id,
                    message_id=row.message_id,
                    envelope=envelope,
                    error=outcome.error,
                    error_code=outcome.error_code,
                    smtp_response=outcome.response if outcome.code else None,
                    smtp_response_code=outcome.code,
                    smtp_command=outcome.command,
                    attempts_made=attempt,
                    attempts=row.max_attempts,
                    next_attempt=next_attempt,
                )
            )
            if not retry:
                staged.append(
                    events.MessageFailed(
                        account=row.account_id,
                        queue_id=row.id,
                        message_id=row.message_id,
                        error=outcome.error,
                        envelope=envelope,
                    )
                )
        values: dict[str, object] = {
            "state": transition.to_state,
            "attempts_made": attempt,
            "claim_token": None,
            "claimed_until": None,
            "last_error": None if outcome.kind == "sent" else outcome.error,
            "smtp_response": outcome.response if outcome.code else None,
        }
        if next_attempt is not None:
            values["next_attempt_at"] = next_attempt
        if transition.to_state in lifecycle.FINAL_STATES:
            values["finished_at"] = events.utcnow()
        # The window between the server's 250 and this commit is the only place a
        # crash can make a message go out twice (RFC 1047), so it is kept short:
        # the connection is already held and the commit does not wait for fsync.
        if outcome.kind == "sent":
            # The server already holds the message: what matters now is recording
            # that before this process can die, not waiting for the disk.  (A
            # database crash in the next moment could only cause a resend.)
            await session.execute(text("SET LOCAL synchronous_commit = off"))
        result = await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == row.id,
                OutboxMessage.state.in_(transition.from_states),
                OutboxMessage.claim_token == claim.token,
            )
            .values(**values)
            .returning(OutboxMessage.id)
            .execution_options(synchronize_session=False)
        )
        if result.scalar_one_or_none() is None:
            # Our claim lapsed and another sender took over: it records the outcome.
            log.warning("lost claim on %s before recording %s", row.id, outcome.kind)
            await session.rollback()
            return
        await session.execute(
            insert(DeliveryAttempt).values(
                queue_id=row.id,
                attempt=attempt,
                outcome={"sent": "sent"}.get(outcome.kind, transition.to_state),
                server=server.label if server else None,
                smtp_code=outcome.code,
                smtp_status=outcome.status,
                response=outcome.response,
                error=_attempt_error(outcome),
                started_at=started,
            )
        )
        stage(session, *staged)
        await session.commit()
        log.info("%s attempt %d -> %s: %s", row.id, attempt, transition.to_state, outcome.response)
        await self.relay.publish_committed(staged)

    async def close(self) -> None:
        self.pool.close()


def _attempt_error(outcome: Outcome) -> str | None:
    parts: list[str] = []
    if outcome.kind != "sent":
        parts.append(f"{outcome.error_code}: {outcome.error}" if outcome.error_code else outcome.error)
    if outcome.refused:
        parts.append("refused: " + "; ".join(f"{k} {v}" for k, v in outcome.refused.items()))
    return " | ".join(parts) or None
