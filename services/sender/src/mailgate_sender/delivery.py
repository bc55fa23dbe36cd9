"""One delivery attempt of one claimed outbox message, from claim to recorded outcome.

    claim (claims.py: many at once, queued|deferred -> sending; renewed while held)
      -> taken over too often? failed, not tried again
      -> the account's SMTP settings (cached, credentials decrypted once), or the
         submit's gateway instead
      -> per-account limits (may hand the message back: no attempt spent)
      -> room in the byte budget for its body (large bodies only), the
         account's connection slot, then one of the process's SMTP slots
      -> its body, loaded now if it did not come with the claim, with the open
         pixel and click links added when tracked (tracking.py)
      -> SMTP transaction on a pooled connection
      -> outcome written with other messages' in one durable commit (recorder.py)
      -> events published once that commit is done
      -> the account's smtpStatus if it changed, the gateway's counters (smtp_status.py)

A message is only ever finished by the sender still holding its claim, and
``sent`` is final, so redelivered events and racing replicas never send twice.
The send is recorded before anything else is done about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import update

from mailgate_common import events, lifecycle, urls
from mailgate_common.backoff import backoff_delay
from mailgate_common.budget import Budget
from mailgate_common.crypto import CredentialError, Sealer, with_secret
from mailgate_common.db import Database
from mailgate_common.db.models import (
    EXTRA_PUBLIC_HOSTS_ONLY,
    EXTRA_RETRY_UNKNOWN_OUTCOME,
    Account,
    DeliveryAttempt,
    Gateway,
    OutboxMessage,
)
from mailgate_common.local_addresses import LocalAddresses
from mailgate_common.settings import Settings
from mailgate_common.telemetry import context_from_traceparent, current_traceparent
from mailgate_sender import smtp_status
from mailgate_sender.claims import BodyGone, Claim, Claimer
from mailgate_sender.dsn import Dsn
from mailgate_sender.limits import Limits, acquire, effective_limits, is_slow_down, throttle_delay
from mailgate_sender.outcome import Outcome
from mailgate_sender.recorder import Record, Recorder
from mailgate_sender.smtp_client import SmtpPool, SmtpServer
from mailgate_sender.smtp_connection import Abandoned
from mailgate_sender.tracking import Trackers

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
GATEWAY_TTL = 5.0  # the same for a gateway's
EXTRA_SMTP_EHLO_NAME = "smtpEhloName"  # EmailEngine's account field, kept in Account.extra by the API

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
    retry_unknown: bool  # an unknown outcome is retried like a temporary failure
    smtp_error: bool = False  # its smtpStatus says its server refused our login


class Deliverer:
    def __init__(self, settings: Settings, db: Database, recorder: Recorder, claimer: Claimer) -> None:
        self.settings = settings
        self.db = db
        self.recorder = recorder
        self.claimer = claimer
        self.pool = SmtpPool(settings.smtp_timeout, settings.sender_concurrency, settings.smtp_helo_name,
                             data_timeout=settings.smtp_data_timeout,
                             local_addresses=LocalAddresses.from_spec(settings.local_addresses))
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        self.trackers = Trackers(settings, db)
        self._accounts: dict[str, tuple[float, Sending | None]] = {}
        self._loading: dict[str, asyncio.Future[Sending | None]] = {}
        self._gateways: dict[str, tuple[float, SmtpServer | Outcome]] = {}
        self._slots: dict[str, Budget] = {}
        # Bytes of bodies loaded for their exchange (those that came with their
        # claim are small, and bounded by the number of claims).
        self.bodies = Budget(settings.sender_body_budget)
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
        # An account whose server refused our login is read afresh for each message:
        # the moment its password is fixed, its messages must stop failing.
        if cached is not None and cached[0] > time.monotonic() and not (cached[1] and cached[1].smtp_error):
            return cached[1]
        loading = self._loading.get(account_id)
        if loading is not None:  # a batch of one account's messages reads it once
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not loading.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The delivery reading it was called off (its claim lost): read it here.
                return await self._sending(account_id)
        future: asyncio.Future[Sending | None] = asyncio.get_running_loop().create_future()
        self._loading[account_id] = future
        try:
            async with self.db.sessions() as session:
                account = await session.get(Account, account_id)
            sending = self._parse(account) if account is not None else None
            restricted = account is not None and (account.extra or {}).get(EXTRA_PUBLIC_HOSTS_ONLY)
            if sending is not None and sending.server is not None and restricted:
                sending = await self._public_only(sending, sending.server)
            before = cached[1].server if cached is not None and cached[1] is not None else None
            if before is not None and (sending is None or sending.server != before):
                self.pool.retire(before)  # its idle connections log in with the old settings
            self._accounts[account_id] = (time.monotonic() + ACCOUNT_TTL, sending)
            if sending is not None and sending.limits.connections:
                self.connection_limits[account_id] = sending.limits.connections
            else:
                self.connection_limits.pop(account_id, None)
            future.set_result(sending)
            return sending
        except asyncio.CancelledError:
            future.cancel()
            raise
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
                ehlo_name = (account.extra or {}).get(EXTRA_SMTP_EHLO_NAME)
                if isinstance(ehlo_name, str) and ehlo_name:
                    server = dataclasses.replace(server, ehlo_name=ehlo_name)
            except (CredentialError, KeyError, ValueError) as exc:
                problem = Outcome("permanent", f"Invalid SMTP settings: {exc}", error_code="ESETTINGS")
        limits = effective_limits(account.limits, server.host) if server else Limits({})
        retry_unknown = self.settings.sender_retry_unknown_outcome or bool(
            (account.extra or {}).get(EXTRA_RETRY_UNKNOWN_OUTCOME))
        known = (account.extra or {}).get(smtp_status.EXTRA_SMTP_STATUS)
        smtp_error = isinstance(known, dict) and known.get("status") == "error"
        return Sending(account.id, server, problem, limits, account.copy, bool(account.imap),
                       account.throttle_level, retry_unknown, smtp_error)

    async def _public_only(self, sending: Sending, server: SmtpServer) -> Sending:
        """An account restricted to public mail servers (its settings came from an
        account-scoped token): refuse to connect where its host now points inside."""
        try:
            await urls.check_public_host(server.host)
        except urls.UnsafeUrl as exc:
            problem = Outcome("permanent", f"Refused SMTP host: {exc}", error_code="ESETTINGS")
            return dataclasses.replace(sending, server=None, problem=problem)
        return sending

    async def _gateway(self, gateway_id: str) -> SmtpServer | Outcome:
        """The gateway's server (cached like an account's), or why it cannot be used."""
        cached = self._gateways.get(gateway_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.db.sessions() as session:
            row = await session.get(Gateway, gateway_id)
        found: SmtpServer | Outcome
        if row is None:
            found = Outcome("permanent", f"Gateway {gateway_id} does not exist", error_code="ESETTINGS")
        else:
            try:
                found = SmtpServer(row.host, int(row.port), bool(row.secure), row.username or None,
                                   _gateway_password(self.sealer.open(row.credentials)) if row.credentials
                                   else None)
            except CredentialError as exc:
                found = Outcome("permanent", f"Invalid gateway credentials: {exc}", error_code="ESETTINGS")
        before = cached[1] if cached is not None else None
        if isinstance(before, SmtpServer) and before != found:
            self.pool.retire(before)
        self._gateways[gateway_id] = (time.monotonic() + GATEWAY_TTL, found)
        return found

    def _forget_account(self, account_id: str) -> None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts[account_id] = (0.0, cached[1])  # read again next time, compared with this

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
        if claim.takeovers >= self.settings.sender_max_takeovers:
            # Each time, its sender crashed, hung or was killed: trying again
            # would only do it again (and may send a message already sent).
            handed_over()
            await self._record(claim, None, None, _interrupted(claim.takeovers), started, trace_hint())
            return
        QUEUE_LAG.observe(max(0.0, (started - claim.next_attempt_at).total_seconds()))
        sending = await self._sending(claim.account_id)
        traceparent = trace_hint()
        gateway = claim.options.get("gateway") if claim.options else None
        server: SmtpServer | None
        if gateway and sending is not None:
            # A submit's ``gateway`` replaces the account's SMTP server for this message.
            through = await self._gateway(str(gateway))
            server, problem = (through, None) if isinstance(through, SmtpServer) else (None, through)
        else:
            server = sending.server if sending is not None else None
            problem = sending.problem if sending is not None else None
        if sending is None or server is None:
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
        try:
            exchanged = await self._exchange_in_turn(claim, sending, server, traceparent)
        except BodyGone:
            exchanged = Outcome("permanent", "The message body is no longer stored", error_code="EMESSAGE"), None
        except Abandoned:
            exchanged = None  # the claim was lost before the message went out
        finally:
            claim.hold.phase = "over"
            handed_over()
        if exchanged is None:
            log.warning("%s: claim lost before its message was sent; left to whoever holds it now", claim.queue_id)
            return
        outcome, traceparent = exchanged
        if is_slow_down(outcome):
            HELD.labels("throttled").inc()
            until = await self._throttle(sending, outcome)
            await self._hold(claim, until, outcome.response, outcome, server, started)
            return
        await self._record(claim, sending, server, outcome, started, traceparent)
        if outcome.kind == "sent" and sending.throttle_level:
            await self._unthrottle(sending.account_id)
        if gateway:
            await smtp_status.record_gateway(self.db, str(gateway), outcome)
        elif _changes_smtp_status(sending, outcome):
            await self._smtp_status_changed(sending.account_id, outcome)

    async def _smtp_status_changed(self, account_id: str, outcome: Outcome) -> None:
        """Best effort, after the message's record: its next change tries again."""
        try:
            await smtp_status.record_account(self.db, self.recorder.relay, account_id, outcome)
        except Exception as exc:
            log.warning("could not store the SMTP status of account %s: %r", account_id, exc)
            return
        self._forget_account(account_id)

    async def _exchange_in_turn(
        self, claim: Claim, sending: Sending, server: SmtpServer, traceparent: str | None
    ) -> tuple[Outcome, str | None] | None:
        """The exchange once the body fits in memory and a connection is free; None
        if the claim was lost meanwhile."""
        # A body that came with the claim is small and already in memory: nothing to reserve.
        loaded = (claim.size or 0) if claim.raw is None else 0
        room = self.bodies.reserve(loaded) if loaded else contextlib.nullcontext()
        async with room, self._connection_slot(sending.account_id, sending.limits.connections), self.smtp_slots:
            if claim.hold.lost:
                return None
            raw = claim.raw if claim.raw is not None else await self.claimer.load_body(claim)
            if raw is None:
                return None
            # Right before it goes out: the stored body (and the Sent copy) stay untracked.
            raw = await self.trackers.add(claim, raw)
            exchanged = await self._exchange(claim, server, raw, traceparent)
            del raw  # before its room in the budget is given back
            return exchanged

    async def _exchange(
        self, claim: Claim, server: SmtpServer, raw: bytes, traceparent: str | None
    ) -> tuple[Outcome, str | None]:
        """The SMTP transaction; returns its outcome and the trace context its events continue."""
        deliver = self.pool.deliver
        dsn = Dsn.from_option(claim.options.get("dsn")) if claim.options else None
        with SEND_SECONDS.time():
            if not TRACING:
                return await deliver(server, claim.envelope_from, claim.envelope_to, raw, claim.hold.may_send,
                                     dsn), traceparent
            with tracer.start_as_current_span(
                "smtp deliver",
                # The trace of the submit that queued this message, when its wake-up told us.
                context=context_from_traceparent(traceparent) if traceparent else None,
                kind=trace.SpanKind.CLIENT,
                attributes={"mailgate.queue_id": claim.queue_id, "server.address": server.label},
            ) as span:
                outcome = await deliver(server, claim.envelope_from, claim.envelope_to, raw, claim.hold.may_send,
                                        dsn)
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
        claim.hold.phase = "over"  # from here on, never called off
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
        if outcome.kind == "sent":
            transition, next_attempt, error = lifecycle.MARK_SENT, None, None
            staged = _sent_events(claim, sending, outcome, envelope, traceparent)
        else:
            transition, next_attempt, error = self._after_failure(outcome, attempt, claim.max_attempts, sending)
            staged = _failure_events(claim, outcome, attempt, envelope, next_attempt, error, traceparent)
        final = transition.to_state in lifecycle.FINAL_STATES
        return Record(
            claim=claim,
            state=transition.to_state,
            attempt=attempt,
            last_error=error,
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
            events=staged,
            authenticated=outcome.authenticated,
        )

    def _after_failure(
        self, outcome: Outcome, attempt: int, attempts: int, sending: Sending | None
    ) -> tuple[lifecycle.Transition, datetime | None, str]:
        """Where a failed attempt leaves the message: deferred (and until when), failed or
        unknown; and the error its user is told."""
        unknown = outcome.kind == "unknown"
        retryable = outcome.kind == "temporary" or (unknown and sending is not None and sending.retry_unknown)
        if retryable and attempt < attempts:
            retry_at = events.utcnow() + timedelta(seconds=backoff_delay(
                attempt, self.settings.delivery_retry_base, self.settings.delivery_retry_max))
            return lifecycle.DEFER, retry_at, outcome.error
        if unknown and not retryable:
            return lifecycle.MARK_UNKNOWN, None, (
                f"{outcome.error}. The server may have delivered the message, so it is not retried "
                "(retryUnknownOutcome allows a retry, which may deliver it twice)")
        return lifecycle.FAIL, None, outcome.error

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
        slots = self._slots.get(account_id)
        if slots is None:
            slots = self._slots[account_id] = Budget(connections)
        elif slots.limit != connections:
            slots.resize(connections)  # the account's limit changed
        return slots.reserve(1)

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
        """After a send (recorded first: this must never stand in its way); best effort,
        as the next send tries again."""
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Account).where(Account.id == account_id).values(throttled_until=None, throttle_level=0)
                )
        except Exception as exc:
            log.warning("could not lift the throttle of account %s: %r", account_id, exc)
            return
        self._forget_account(account_id)

    async def hand_back(self, claim: Claim) -> None:
        """The message was not tried (the sender is stopping): due again at once, no attempt
        spent, and no takeover counted against it."""
        async with self.db.transaction() as session:
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == claim.queue_id, OutboxMessage.claim_token == claim.token,
                       OutboxMessage.state.in_(lifecycle.RELEASE.from_states))
                .values(state=lifecycle.RELEASE.to_state, claim_token=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )

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
        claim.hold.phase = "over"
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
                    started_at=started or events.utcnow(), authenticated=outcome.authenticated,
                ))

    async def close(self) -> None:
        self.pool.close()


def _sent_events(
    claim: Claim, sending: Sending | None, outcome: Outcome, envelope: events.Envelope, traceparent: str | None
) -> tuple[events.Event, ...]:
    staged: list[events.Event] = [events.MessageSent(
        account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
        response=outcome.response, envelope=envelope, traceparent=traceparent,
    )]
    imap = sending is not None and sending.imap
    copy = claim.copy if claim.copy is not None else sending.copy if sending else None
    # A sent draft leaves the Drafts folder even when no Sent copy is wanted (imap-sync does both).
    draft = bool(claim.options and claim.options.get("draft"))
    if imap and (copy is not False or draft):
        staged.append(events.ImapAppendSent(account=claim.account_id, queue_id=claim.queue_id, traceparent=traceparent))
    if claim.reference and imap:
        # A reply or forward marks the message it answered, as mail clients do.
        forward = claim.reference.get("action") == "forward"
        staged.append(events.ImapSetFlags(
            account=claim.account_id, message=str(claim.reference.get("message", "")),
            add=["$Forwarded" if forward else "\\Answered"], traceparent=traceparent,
        ))
    return tuple(staged)


def _failure_events(
    claim: Claim, outcome: Outcome, attempt: int, envelope: events.Envelope, next_attempt: datetime | None,
    error: str, traceparent: str | None,
) -> tuple[events.Event, ...]:
    """messageDeliveryError for every failed attempt; messageFailed too when it was the last."""
    unknown = outcome.kind == "unknown"
    staged: list[events.Event] = [events.MessageDeliveryError(
        account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
        envelope=envelope, error=outcome.error, error_code=outcome.error_code,
        smtp_response=outcome.response if outcome.code else None,
        smtp_response_code=outcome.code, smtp_command=outcome.command,
        attempts_made=attempt, attempts=claim.max_attempts, next_attempt=next_attempt,
        outcome_unknown=unknown, traceparent=traceparent,
    )]
    if next_attempt is None:
        staged.append(events.MessageFailed(
            account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
            error=error, envelope=envelope, outcome_unknown=unknown, traceparent=traceparent,
        ))
    return tuple(staged)


def _interrupted(takeovers: int) -> Outcome:
    return Outcome("permanent", f"Delivery interrupted {takeovers} times (the sender crashed or was killed "
                                "mid-delivery); not retried", error_code="EINTERRUPTED")


def _attempt_error(outcome: Outcome) -> str | None:
    parts: list[str] = []
    if outcome.kind != "sent":
        parts.append(f"{outcome.error_code}: {outcome.error}" if outcome.error_code else outcome.error)
    if outcome.refused:
        parts.append("refused: " + "; ".join(f"{k} {v}" for k, v in outcome.refused.items()))
    return " | ".join(parts) or None


def _changes_smtp_status(sending: Sending, outcome: Outcome) -> bool:
    """A refused login of an account not known to be refused, or a send of one that was."""
    return outcome.kind == "sent" if sending.smtp_error else smtp_status.is_auth_failure(outcome)


def _gateway_password(sealed: dict[str, object]) -> str | None:
    """A gateway's sealed password: ``{"pass": ...}`` (or the accounts' ``{"smtp": ...}``)."""
    for key in ("pass", "password", "smtp"):
        value = sealed.get(key)
        if isinstance(value, str):
            return value
    return None
