"""The SMTP conversation, as aiosmtpd hooks: one method per command we shape.

aiosmtpd parses the protocol; these hooks decide.  Order of a submission:
``handle_PROXY`` (when enabled) -> ``handle_EHLO`` (what we offer) ->
``handle_AUTH`` (may this connection authenticate at all?) -> ``auth_PLAIN`` /
``auth_LOGIN`` (check the credentials, throttled) -> ``handle_MAIL`` /
``handle_RCPT`` (envelope, validated) -> ``handle_DATA`` (compose, render a
template the message names in ``X-Mailgate-Template``, queue through the shared
outbox path; "250 queued" only after the commit).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from mailgate_common import events, suppression
from mailgate_common.db import Database
from mailgate_common.db.models import Account
from mailgate_common.mime import InvalidMessage, normalize_address
from mailgate_common.outbox import (
    AccountCannotSend,
    NewMessage,
    Outbox,
    RecipientsSuppressed,
    UnknownAccount,
)
from mailgate_common.settings import Settings
from mailgate_common.telemetry import current_traceparent
from mailgate_common.templates import apply as templates
from mailgate_smtp_ingress import replies, templating
from mailgate_smtp_ingress.auth import Authenticator, FailureThrottle, Identity, is_loopback
from mailgate_smtp_ingress.hooks import ConnectionHooks, client_address
from mailgate_smtp_ingress.message import Rejected, compose

log = logging.getLogger("mailgate.smtp_ingress")

MAX_RECIPIENTS = 1000


@dataclass(frozen=True)
class Policy:
    auth_required: bool
    allow_plaintext_auth: bool
    max_attempts: int
    auth_failure_delay: float = 0.5
    # No-auth mode: the account for messages without an X-EE-Account header.
    default_account: str | None = None
    # {{service.url}} in templates, as at the REST door.
    service_url: str | None = None
    max_message_size: int = 25 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            auth_required=settings.smtp_auth,
            allow_plaintext_auth=settings.smtp_allow_plaintext_auth,
            max_attempts=settings.delivery_attempts,
            auth_failure_delay=settings.smtp_auth_failure_delay,
            default_account=None if settings.smtp_auth else settings.smtp_default_account,
            service_url=settings.service_url,
            max_message_size=settings.max_message_size,
        )


def envelope_address(field: str, address: str) -> str:
    """A MAIL/RCPT address as stored: valid syntax, IDN as punycode, valid UTF-8."""
    normalized = normalize_address(field, address)
    # aiosmtpd keeps undecodable bytes as surrogates; PostgreSQL cannot store them.
    if not normalized.isprintable() or normalized != normalized.encode("utf-8", "replace").decode():
        raise InvalidMessage(field, f"{address!r} is not valid UTF-8")
    return normalized


class IngressHandler(ConnectionHooks):
    def __init__(self, policy: Policy, db: Database, outbox: Outbox,
                 authenticator: Authenticator, throttle: FailureThrottle | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.db = db
        self.outbox = outbox
        self.suppressions = suppression.Lookups(db)
        self.authenticator = authenticator
        self.throttle = throttle or FailureThrottle(base=policy.auth_failure_delay)

    # --- connection --------------------------------------------------------

    def plaintext_auth_ok(self, session: Session) -> bool:
        """AUTH sends a reusable secret: only over TLS, on loopback, or when the operator says so."""
        return (
            session.ssl is not None
            or self.policy.allow_plaintext_auth
            or is_loopback(client_address(session))
        )

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must record it itself
        lines = [server.hostname]
        if server.data_size_limit:
            lines.append(f"SIZE {server.data_size_limit}")
        lines += ["8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"]
        if server.tls_context is not None and session.ssl is None:
            lines.append("STARTTLS")
        if self.plaintext_auth_ok(session):
            lines.append("AUTH PLAIN LOGIN")
        lines.append("HELP")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    # --- authentication ----------------------------------------------------

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope,
                          args: list[str]) -> Any:
        if not self.plaintext_auth_ok(session):
            return replies.AUTH_NEEDS_TLS
        return MISSING  # go on with the mechanism (auth_PLAIN / auth_LOGIN below)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)  # aiosmtpd already answered 501
        else:
            try:
                blob = b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        assert isinstance(blob, bytes)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._verify(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(login, bytes) and isinstance(password, bytes)
        return await self._verify(server, login, password)

    async def _verify(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        assert server.session is not None
        address = client_address(server.session)
        delay = self.throttle.delay(address)
        if delay:
            await asyncio.sleep(delay)
        try:
            identity = await self.authenticator.check(login, password)
        except Exception as exc:
            log.warning("AUTH check failed (%r); answering 454", exc)
            return AuthResult(success=False, handled=False, message=replies.AUTH_TEMPFAIL)
        if identity is None:
            self.throttle.failed(address)
            log.info("AUTH failed for %r from %s", login[:100], address)
            return AuthResult(success=False, handled=False, message=replies.AUTH_INVALID)
        self.throttle.succeeded(address)
        log.info("AUTH ok: account %s (%s) from %s", identity.account, identity.via, address)
        return AuthResult(success=True, auth_data=identity, message=replies.AUTH_OK)

    # --- envelope ----------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.policy.auth_required and not session.authenticated:
            return replies.AUTH_REQUIRED
        try:
            normalized = envelope_address("from", address)
        except InvalidMessage as exc:
            return replies.bad_address(exc.message)
        envelope.mail_from = normalized
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        try:
            normalized = envelope_address("to", address)
        except InvalidMessage as exc:
            return replies.bad_address(exc.message)
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS
        identity = session.auth_data if session.authenticated else None
        # Without AUTH the account is only known at DATA (X-EE-Account): check the
        # global list now and the account's own list in _queue.
        account = identity.account if isinstance(identity, Identity) else None
        try:
            if await self.suppressions.suppressed(account, [normalized]):
                return replies.suppressed(normalized)
        except Exception as exc:
            log.warning("suppression check failed: %r", exc)
            return replies.RCPT_TEMPFAIL
        if normalized.lower() not in (r.lower() for r in envelope.rcpt_tos):
            envelope.rcpt_tos.append(normalized)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    # --- message -----------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        identity = session.auth_data if session.authenticated else None
        if self.policy.auth_required and not isinstance(identity, Identity):
            return replies.AUTH_REQUIRED
        data = envelope.original_content or b""
        assert isinstance(data, bytes) and envelope.mail_from is not None
        try:
            asked = templating.requested(data)
            message = compose(
                data,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                account=identity.account if isinstance(identity, Identity) else None,
                default_account=self.policy.default_account,
                max_attempts=self.policy.max_attempts,
                now=events.utcnow(),
                traceparent=current_traceparent(),
            )
        except Rejected as rejected:
            return rejected.reply
        if asked is not None:
            refused = await self._render(message, asked)
            if refused is not None:
                return refused
        # Shielded: a client hanging up mid-commit must not cancel the transaction
        # halfway; the task finishes and stop() waits for it.
        return await self.shielded(self._queue(message, client_address(session)))

    async def _render(self, message: NewMessage, asked: templating.TemplateAsk) -> str | None:
        """Fill ``message`` from its template; the refusal's reply, or None when rendered."""
        try:
            async with self.db.sessions() as session:
                template = await templates.load(session, asked.template_id, message.account_id)
                account = await session.get(Account, message.account_id) if template is not None else None
        except Exception as exc:
            log.warning("loading template %s failed: %r", asked.template_id, exc)
            return replies.INTERNAL
        if template is None:
            return templating.not_found(asked.template_id)
        if account is None:
            return "550 5.7.1 Unknown account"
        try:
            # A thread: a heavy template (bounded at MAX_RENDER_SECONDS) must not stall other sessions.
            applied = await asyncio.to_thread(templating.apply, message.raw, template, account,
                                              asked.params, self.policy.service_url)
        except Rejected as rejected:
            return rejected.reply
        if applied.css_error is not None:
            log.warning("template %s sent un-inlined: %s", template.id, applied.css_error)
        if len(applied.raw) > self.policy.max_message_size:
            return replies.TOO_BIG
        message.raw = applied.raw
        if applied.subject is not None:
            message.subject = applied.subject
        return None

    async def _queue(self, message: NewMessage, client: str) -> str:
        try:
            while True:
                try:
                    queued = await self.outbox.enqueue(message)
                    break
                except RecipientsSuppressed as exc:
                    # Like REST's skipSuppressed: the others still get the message.
                    # Without AUTH, RCPT could only check the global list.
                    message.envelope_to = [r for r in message.envelope_to if r not in exc.blocked]
                    if not message.envelope_to:
                        return replies.ALL_SUPPRESSED
                except UnknownAccount:
                    return "550 5.7.1 Unknown account"
                except AccountCannotSend:
                    return "550 5.7.1 The account has no SMTP settings to send with"
        except Exception:
            log.exception("queuing a message from %s failed", client)
            return replies.INTERNAL
        log.info("queued %s for account %s from %s (%d recipients)", queued.queue_id,
                 message.account_id, client, len(message.envelope_to))
        return replies.queued(queued.queue_id, queued.send_at)
