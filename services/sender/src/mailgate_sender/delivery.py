"""One delivery attempt of one claimed outbox message, from claim to recorded outcome.

    claim (claims.py: many at once, queued|deferred -> sending)
      -> the account's SMTP settings (cached, credentials decrypted once)
      -> per-account limits (may hand the message back: no attempt spent)
      -> the account's connection slot, then one of the process's SMTP slots
      -> SMTP transaction on a pooled connection
      -> outcome written with other messages' in one durable commit (recorder.py)
      -> events published once that commit is done

A message is only ever finished by the sender still holding its claim, and
``sent`` is final, so redelivered events and racing replicas never send twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import update

from mailgate_common import events, lifecycle
from mailgate_common.backoff import backoff_delay
from mailgate_common.crypto import CredentialError, Sealer, with_secret
from mailgate_common.db import Database
from mailgate_common.db.models import Account, DeliveryAttempt, OutboxMessage
from mailgate_common.settings import Settings
from mailgate_common.telemetry import context_from_traceparent, current_traceparent
from mailgate_sender.claims import Claim
from mailgate_sender.limits import Limits, acquire, effective_limits, is_slow_down, throttle_delay
from mailgate_sender.outcome import Outcome
from mailgate_sender.recorder import Record, Recorder
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
ACCOUNT_TTL = 5.0  # seconds an account's SMTP settings are reused before re-reading
# A span per message costs more CPU than the rest of its bookkeeping: only built
# when someone collects them (the operator configured an OTLP endpoint).  Without
# spans the submit's trace context still travels on to the events.
TRACING = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


@dataclass(frozen=True, slots=True)
class Sending:
    """What delivering for one account needs, decrypted and parsed once per ``ACCOUNT_TTL``."""

    account_id: str
    server: SmtpServer | None
    problem: Outcome | None  # why this account cannot send (no or broken SMTP settings)
    limits: Limits
    copy: bool | None
    imap: bool
    throttle_level: int


class Deliverer:
    def __init__(self, settings: Settings, db: Database, recorder: Recorder) -> None:
        self.settings = settings
        self.db = db
        self.recorder = recorder
        self.pool = SmtpPool(settings.smtp_timeout, settings.sender_concurrency, settings.smtp_helo_name)
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        self._accounts: dict[str, tuple[float, Sending | None]] = {}
        self._loading: dict[str, asyncio.Future[Sending | None]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        # SMTP exchanges at once (each holds a connection).  Taken after the
        # account's own connection slot, so a message waiting for its account
        # never keeps another account's message from a connection.
        self.smtp_slots = asyncio.Semaphore(settings.sender_concurrency)
        # Connection limits of the accounts that have one, as last read: the
        # dispatcher claims no more of an account's messages than it has free.
        self.connection_limits: dict[str, int] = {}

    # --- accounts ---------------------------------------------------------

    async def _sending(self, account_id: str) -> Sending | None:
        cached = self._accounts.get(account_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loading = self._loading.get(account_id)
        if loading is not None:  # a batch of one account's messages reads it once
            return await asyncio.shield(loading)
        future: asyncio.Future[Sending | None] = asyncio.get_running_loop().create_future()
        self._loading[account_id] = future
        try:
            async with self.db.sessions() as session:
                account = await session.get(Account, account_id)
            sending = self._parse(account) if account is not None else None
            self._accounts[account_id] = (time.monotonic() + ACCOUNT_TTL, sending)
            if sending is not None and sending.limits.connections:
                self.connection_limits[account_id] = sending.limits.connections
            else:
                self.connection_limits.pop(account_id, None)
            future.set_result(sending)
            return sending
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, get it from their await
            raise
        finally:
            del self._loading[account_id]

    def _parse(self, account: Account) -> Sending:
        server: SmtpServer | None = None
        problem: Outcome | None = None
        if not account.smtp:
            problem = Outcome("permanent", "Account has no SMTP settings", error_code="ESETTINGS")
        else:
            try:
                secret = self.sealer.open(account.credentials).get("smtp") if account.credentials else None
                server = SmtpServer.from_account(with_secret(account.smtp, secret))
            except (CredentialError, KeyError, ValueError) as exc:
                problem = Outcome("permanent", f"Invalid SMTP settings: {exc}", error_code="ESETTINGS")
        limits = effective_limits(account.limits, server.host) if server else Limits({})
        return Sending(account.id, server, problem, limits, account.copy, bool(account.imap),
                       account.throttle_level)

    def _forget_account(self, account_id: str) -> None:
        self._accounts.pop(account_id, None)

    # --- delivering -------------------------------------------------------

    async def deliver(
        self,
        claim: Claim,
        trace_hint: Callable[[], str | None] = lambda: None,
        handed_over: Callable[[], None] = lambda: None,
    ) -> None:
        """Deliver one claimed message.

        ``trace_hint`` gives the trace context its wake-up event brought, asked as
        late as possible (the event may arrive just after the claim);
        ``handed_over`` is called once the SMTP exchange is over (its connection
        is free again), before the outcome is recorded, or once the message is
        handed back untried.
        """
        started = events.utcnow()
        QUEUE_LAG.observe(max(0.0, (started - claim.next_attempt_at).total_seconds()))
        sending = await self._sending(claim.account_id)
        traceparent = trace_hint()
        server = sending.server if sending is not None else None
        if sending is None or server is None:
            problem = sending.problem if sending is not None else None
            outcome = problem or Outcome("permanent", "Account has no SMTP settings", error_code="ESETTINGS")
            await self._record(claim, sending, None, outcome, started, traceparent)
            return
        limits = sending.limits
        if limits.rates:
            wait_until = await self._acquire(sending.account_id, limits)
            if wait_until is not None:
                HELD.labels("limit").inc()
                handed_over()
                await self._hold(claim, wait_until, f"sending limit reached until {events.iso(wait_until)}")
                return
        async with self._connection_slot(sending.account_id, limits.connections), self.smtp_slots:
            # Waited too long for a connection, another sender may take the claim
            # over soon, and two must never send one message: hand it back untried.
            stale = time.monotonic() - claim.claimed_at > self.settings.sender_claim_timeout / 2
            exchanged = None if stale else await self._exchange(claim, server, traceparent)
        handed_over()
        if exchanged is None:
            await self._release(claim)
            return
        outcome, traceparent = exchanged
        if is_slow_down(outcome):
            HELD.labels("throttled").inc()
            until = await self._throttle(sending, outcome)
            await self._hold(claim, until, outcome.response, outcome, server, started)
            return
        if outcome.kind == "sent" and sending.throttle_level:
            await self._unthrottle(sending.account_id)
        await self._record(claim, sending, server, outcome, started, traceparent)

    async def _exchange(self, claim: Claim, server: SmtpServer, traceparent: str | None) -> tuple[Outcome, str | None]:
        """The SMTP transaction; returns its outcome and the trace context its events continue."""
        with SEND_SECONDS.time():
            if not TRACING:
                return await self.pool.deliver(server, claim.envelope_from, claim.envelope_to, claim.raw), traceparent
            with tracer.start_as_current_span(
                "smtp deliver",
                # The trace of the submit that queued this message, when its wake-up told us.
                context=context_from_traceparent(traceparent) if traceparent else None,
                kind=trace.SpanKind.CLIENT,
                attributes={"mailgate.queue_id": claim.queue_id, "server.address": server.label},
            ) as span:
                outcome = await self.pool.deliver(server, claim.envelope_from, claim.envelope_to, claim.raw)
                span.set_attribute("mailgate.outcome", outcome.kind)
                # Events about this attempt continue its trace.
                return outcome, current_traceparent()

    async def _record(
        self,
        claim: Claim,
        sending: Sending | None,
        server: SmtpServer | None,
        outcome: Outcome,
        started: datetime,
        traceparent: str | None,
    ) -> None:
        ATTEMPTS.labels(outcome.kind).inc()
        record = self._outcome(claim, sending, server, outcome, started, traceparent)
        if await self.recorder.record(record):
            log.info("%s attempt %d -> %s: %s", claim.queue_id, record.attempt, record.state, outcome.response)
        else:
            # Our claim lapsed and another sender took over: it records the outcome.
            log.warning("lost claim on %s before recording %s", claim.queue_id, outcome.kind)

    def _outcome(
        self,
        claim: Claim,
        sending: Sending | None,
        server: SmtpServer | None,
        outcome: Outcome,
        started: datetime,
        traceparent: str | None,
    ) -> Record:
        attempt = claim.attempts_made + 1
        envelope = events.Envelope(from_=claim.envelope_from, to=list(claim.envelope_to))
        staged: list[events.Event] = []
        next_attempt: datetime | None = None
        if outcome.kind == "sent":
            transition = lifecycle.MARK_SENT
            staged.append(events.MessageSent(
                account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
                response=outcome.response, envelope=envelope, traceparent=traceparent,
            ))
            imap = sending is not None and sending.imap
            copy = claim.copy if claim.copy is not None else sending.copy if sending else None
            if imap and copy is not False:
                staged.append(events.ImapAppendSent(
                    account=claim.account_id, queue_id=claim.queue_id, traceparent=traceparent))
            if claim.reference and imap:
                # A reply or forward marks the message it answered, as mail clients do.
                forward = claim.reference.get("action") == "forward"
                staged.append(events.ImapSetFlags(
                    account=claim.account_id, message=str(claim.reference.get("message", "")),
                    add=["$Forwarded" if forward else "\\Answered"], traceparent=traceparent,
                ))
        else:
            retry = outcome.kind == "temporary" and attempt < claim.max_attempts
            if retry:
                transition = lifecycle.DEFER
                next_attempt = events.utcnow() + timedelta(seconds=backoff_delay(
                    attempt, self.settings.delivery_retry_base, self.settings.delivery_retry_max))
            else:
                transition = lifecycle.FAIL
            staged.append(events.MessageDeliveryError(
                account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
                envelope=envelope, error=outcome.error, error_code=outcome.error_code,
                smtp_response=outcome.response if outcome.code else None,
                smtp_response_code=outcome.code, smtp_command=outcome.command,
                attempts_made=attempt, attempts=claim.max_attempts, next_attempt=next_attempt,
                traceparent=traceparent,
            ))
            if not retry:
                staged.append(events.MessageFailed(
                    account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
                    error=outcome.error, envelope=envelope, traceparent=traceparent,
                ))
        final = transition.to_state in lifecycle.FINAL_STATES
        return Record(
            claim=claim,
            state=transition.to_state,
            attempt=attempt,
            last_error=None if outcome.kind == "sent" else outcome.error,
            smtp_response=outcome.response if outcome.code else None,
            next_attempt_at=next_attempt,
            finished_at=events.utcnow() if final else None,
            outcome="sent" if outcome.kind == "sent" else transition.to_state,
            server=server.label if server else None,
            smtp_code=outcome.code,
            smtp_status=outcome.status,
            response=outcome.response,
            error=_attempt_error(outcome),
            started_at=started,
            events=tuple(staged),
        )

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

    async def _throttle(self, sending: Sending, outcome: Outcome) -> datetime:
        """The server said "slow down": leave the whole account alone for a while."""
        level = sending.throttle_level + 1
        until = events.utcnow() + timedelta(
            seconds=throttle_delay(level, self.settings.throttle_base, self.settings.throttle_max)
        )
        async with self.db.transaction() as session:
            await session.execute(
                update(Account).where(Account.id == sending.account_id)
                .values(throttled_until=until, throttle_level=level)
            )
        self._forget_account(sending.account_id)
        log.warning("account %s throttled until %s: %s", sending.account_id, events.iso(until), outcome.response)
        return until

    async def _unthrottle(self, account_id: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(Account).where(Account.id == account_id).values(throttled_until=None, throttle_level=0)
            )
        self._forget_account(account_id)

    async def _release(self, claim: Claim) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == claim.queue_id, OutboxMessage.claim_token == claim.token,
                       OutboxMessage.state.in_(lifecycle.RELEASE.from_states))
                .values(state=lifecycle.RELEASE.to_state, claim_token=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
        log.warning("%s waited too long for an SMTP connection; handed back", claim.queue_id)

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
        async with self.db.transaction() as session:
            released = await session.scalar(
                update(OutboxMessage)
                .where(OutboxMessage.id == claim.queue_id, OutboxMessage.claim_token == claim.token,
                       OutboxMessage.state.in_(lifecycle.RELEASE.from_states))
                .values(state=lifecycle.RELEASE.to_state, claim_token=None, claimed_until=None,
                        next_attempt_at=until, last_error=reason)
                .returning(OutboxMessage.id)
            )
            if released is None:
                return
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.account_id == claim.account_id,
                       OutboxMessage.state.in_(lifecycle.CLAIM.from_states),
                       OutboxMessage.next_attempt_at < until)
                .values(next_attempt_at=until, last_error=reason)
                .execution_options(synchronize_session=False)
            )
            if outcome is not None:
                # The exchange happened; keep it in the message's history, uncounted.
                session.add(DeliveryAttempt(
                    queue_id=claim.queue_id, attempt=claim.attempts_made + 1, outcome="throttled",
                    server=server.label if server else None, smtp_code=outcome.code,
                    smtp_status=outcome.status, response=outcome.response, error=reason,
                    started_at=started or events.utcnow(),
                ))

    async def close(self) -> None:
        self.pool.close()


def _attempt_error(outcome: Outcome) -> str | None:
    parts: list[str] = []
    if outcome.kind != "sent":
        parts.append(f"{outcome.error_code}: {outcome.error}" if outcome.error_code else outcome.error)
    if outcome.refused:
        parts.append("refused: " + "; ".join(f"{k} {v}" for k, v in outcome.refused.items()))
    return " | ".join(parts) or None
