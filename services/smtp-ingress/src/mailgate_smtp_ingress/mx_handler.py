"""The MX door: mail from the internet for the domains and addresses that have a route.

aiosmtpd hooks, in the order of a transaction:

``handle_EHLO``   what we offer: no AUTH on this port, STARTTLS when a certificate is set.
``handle_MAIL``   per-IP and per-sender rate limits (``<>``, bounces, counts per IP only).
``handle_RCPT``   the route table decides: no route → ``550 5.1.1`` (never a relay, never a
                  bounce later); a route that rejects on the recipient alone → ``550 5.7.1``;
                  a declared SIZE= above the routes' limit → ``552 5.3.4``.
``handle_DATA``   loops → ``554 5.4.6``; SPF/DKIM/DMARC (and rspamd when configured); the
                  routes whose header and verdict criteria hold; synchronous routes asked
                  now; then ONE transaction (the message, the sync calls' delivery log, the
                  ``InboundMessage`` events) before ``250``.  The database away → ``451 4.3.0``
                  and nothing written.

A held message (a taken route has a ``hold`` action) calls nobody, synchronously or not:
``POST /v1/inbound/messages/{id}/release`` stages its events later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate_common import events
from mailgate_common.event_relay import EventRelay
from mailgate_common.inbound import payload
from mailgate_common.inbound.auth import Authenticator, AuthResults
from mailgate_common.inbound.routes import (
    RecipientMatch,
    RouteCache,
    decide,
    delivery_entries,
    first_reject,
    max_size,
    rejects_at_rcpt,
)
from mailgate_common.inbound.spam import SpamChecker
from mailgate_common.mime import InvalidMessage
from mailgate_common.outbox import new_queue_id
from mailgate_common.settings import Settings
from mailgate_smtp_ingress import mx_message, mx_store, replies
from mailgate_smtp_ingress.handler import envelope_address
from mailgate_smtp_ingress.hooks import ConnectionHooks, client_address
from mailgate_smtp_ingress.mx_sync import RouteCall, SyncCaller, body_for, delivery_rows
from mailgate_smtp_ingress.rate_limits import RateLimit
from mailgate_smtp_ingress.server import IngressSMTP, size_option

log = logging.getLogger("mailgate.smtp_ingress.mx")

# RFC 5321 4.5.3.1.8: a server must take at least 100 recipients.
MAX_RECIPIENTS = 100
NULL_SENDER = "<>"
AUTH_REFUSED = "503 5.5.1 AUTH is not available on this port (it takes mail for local recipients only)"
NO_ROUTE = "550 5.7.1 No route accepts this message for its recipients"
# Seconds between route reloads caused by unknown recipients (a spray of them costs one query a second).
MISS_RELOAD = 1.0
ROUTES_TEMPFAIL = "451 4.3.0 Temporary failure looking up the recipient, try again later"


def no_such_recipient(address: str) -> str:
    return f"550 5.1.1 <{address}>: no such recipient here"


def rejected(message: str | None) -> str:
    return f"550 5.7.1 {message or 'Recipient rejected'}"


def accepted(message_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {message_id}"


class MxEnvelope(Envelope):
    """An envelope that remembers the smallest size limit its recipients' routes allow."""

    def __init__(self, size_limit: int) -> None:
        super().__init__()
        self.size_limit = size_limit


class MxSMTP(IngressSMTP):
    """The submission door's protocol, with AUTH refused and DATA bounded by the routes' limit."""

    def _create_envelope(self) -> MxEnvelope:
        return MxEnvelope(self.data_size_limit or 0)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(AUTH_REFUSED)

    async def smtp_DATA(self, arg: str) -> None:
        door_limit = self.data_size_limit
        if isinstance(self.envelope, MxEnvelope) and self.envelope.size_limit:
            self.data_size_limit = min(door_limit or self.envelope.size_limit, self.envelope.size_limit)
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_size_limit = door_limit


@dataclass(frozen=True)
class MxPolicy:
    hostname: str
    max_size: int
    sync_timeout: float
    inline_max: int
    service_url: str | None

    @classmethod
    def from_settings(cls, settings: Settings, hostname: str) -> MxPolicy:
        return cls(hostname, settings.mx_max_size, settings.mx_sync_timeout,
                   settings.inbound_inline_attachment_max, settings.service_url)


@dataclass
class Outcome:
    """What DATA decided for each recipient."""

    taken: dict[str, list[RecipientMatch]] = field(default_factory=dict)  # recipient -> routes
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> its SMTP reply

    def refuse(self, recipient: str, reply: str) -> None:
        self.taken.pop(recipient, None)
        self.refused.setdefault(recipient, reply)

    def matches(self) -> list[RecipientMatch]:
        return [m for found in self.taken.values() for m in found]


class MxHandler(ConnectionHooks):
    def __init__(self, policy: MxPolicy, routes: RouteCache, authenticator: Authenticator,
                 spam: SpamChecker, sync: SyncCaller, relay: EventRelay, db: Any, *,
                 per_ip: RateLimit, per_sender: RateLimit) -> None:
        super().__init__()
        self.policy = policy
        self.routes = routes
        self.authenticator = authenticator
        self.spam = spam
        self.sync = sync
        self.relay = relay
        self.db = db
        self.per_ip = per_ip
        self.per_sender = per_sender
        self._miss_reload_at = 0.0

    # --- connection --------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [server.hostname]
        if server.data_size_limit:
            lines.append(f"SIZE {server.data_size_limit}")
        lines += ["8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES"]
        if server.tls_context is not None and session.ssl is None:
            lines.append("STARTTLS")
        lines.append("HELP")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    # --- envelope ----------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        ip = client_address(session)
        if address != NULL_SENDER:
            try:
                address = envelope_address("from", address)
            except InvalidMessage as exc:
                return replies.bad_address(exc.message)
        if not self.per_ip.take(ip):
            log.info("MX rate limit: %s over %d messages/minute", ip, self.per_ip.per_minute)
            return f"450 4.7.1 Too many messages from {ip}, slow down and try again later"
        if address != NULL_SENDER and not self.per_sender.take(address.lower()):
            log.info("MX rate limit: sender %s over %d messages/minute", address, self.per_sender.per_minute)
            return f"450 4.7.1 Too many messages from <{address}>, try again later"
        envelope.mail_from = address  # "<>" stays "<>" until DATA: aiosmtpd needs a non-empty value
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
        try:
            matches = await self._matches(normalized)
        except Exception as exc:
            log.warning("inbound routes could not be loaded: %r", exc)
            return ROUTES_TEMPFAIL
        if not matches:
            return no_such_recipient(normalized)
        reject = rejects_at_rcpt(matches)
        if reject is not None:
            return rejected(reject.message)
        limit = max_size(matches, self.policy.max_size)
        if (size_option(envelope.mail_options) or 0) > limit:
            return replies.TOO_BIG
        if isinstance(envelope, MxEnvelope):
            envelope.size_limit = min(envelope.size_limit or limit, limit)
        if normalized.lower() not in (r.lower() for r in envelope.rcpt_tos):
            envelope.rcpt_tos.append(normalized)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def _matches(self, recipient: str) -> list[RecipientMatch]:
        """The cached table's answer; an unknown recipient rereads the routes, at most once per
        ``MISS_RELOAD`` seconds, so a route just added works at once without a query per RCPT."""
        matches = (await self.routes.table()).for_recipient(recipient)
        now = time.monotonic()
        if not matches and now - self._miss_reload_at >= MISS_RELOAD:
            self._miss_reload_at = now
            self.routes.invalidate()
            matches = (await self.routes.table()).for_recipient(recipient)
        return matches

    # --- message -----------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        assert isinstance(raw, bytes) and envelope.mail_from is not None
        loop = mx_message.loop_reply(raw, self.policy.hostname)
        if loop is not None:
            return loop
        ip = client_address(session)
        mail_from = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        rcpt_tos = list(envelope.rcpt_tos)
        message_id = new_queue_id()
        try:
            auth, spam = await asyncio.gather(
                self.authenticator.check(raw, ip=ip, helo=session.host_name, mail_from=mail_from),
                self.spam.check(raw, ip=ip, helo=session.host_name, mail_from=mail_from,
                                recipients=rcpt_tos, queue_id=message_id))
        except Exception:
            log.exception("authentication checks failed for a message from %s", ip)
            return replies.INTERNAL
        tls = _tls_version(server)
        stored = mx_message.stored_copy(
            raw,
            auth.header_field(self.policy.hostname),
            mx_message.received_field(helo=session.host_name, ip=ip, hostname=self.policy.hostname, tls=tls,
                                      message_id=message_id, recipient=rcpt_tos[0] if len(rcpt_tos) == 1 else None),
        )
        headers = mx_message.headers_of(raw)
        outcome = await self._outcome(rcpt_tos, headers, auth)
        if not outcome.taken:
            return next(iter(outcome.refused.values()), NO_ROUTE)
        received = payload.Received(
            id=message_id, raw=stored, received_at=events.utcnow(), mail_from=mail_from, rcpt_to=rcpt_tos,
            remote_ip=ip, helo=session.host_name, tls=tls, auth=auth.as_payload(), spam=spam,
            automated=mx_message.automated(raw, headers, null_sender=not mail_from, hostname=self.policy.hostname),
        )
        return await self.shielded(self._take(received, headers, outcome))

    async def _outcome(self, rcpt_tos: Sequence[str], headers: Any, auth: AuthResults) -> Outcome:
        """Each recipient's routes now that the message is known; refusals with their reply."""
        outcome = Outcome()
        try:
            table = await self.routes.table()
        except Exception as exc:
            log.warning("inbound routes could not be loaded: %r", exc)
            for recipient in rcpt_tos:
                outcome.refuse(recipient, ROUTES_TEMPFAIL)
            return outcome
        for recipient in rcpt_tos:
            taken = decide(table.for_recipient(recipient), headers, auth)
            reject = first_reject(taken)
            if reject is not None:
                outcome.refuse(recipient, rejected(reject.message))
            elif not taken:
                outcome.refuse(recipient, NO_ROUTE)
            else:
                outcome.taken[recipient] = taken
        return outcome

    async def _take(self, received: payload.Received, headers: Any, outcome: Outcome) -> str:
        held = any(m.route.holds for m in outcome.matches())
        try:
            route_calls = [] if held else await self._call_sync_routes(received, outcome)
        except Exception:
            log.exception("synchronous routes failed for %s", received.id)
            return replies.INTERNAL
        temporary = [c.refusal for c in route_calls if c.refusal and c.refusal.startswith("4")]
        if temporary:
            # Nothing is kept: the sender retries the whole message, nobody loses it.
            return str(temporary[0])
        for route_call in route_calls:
            if route_call.refusal:
                for recipient in route_call.event.recipients:
                    outcome.refuse(recipient, route_call.refusal)
        if not outcome.taken:
            return next(iter(outcome.refused.values()), NO_ROUTE)
        matches = outcome.matches()
        kept = {route_call.event.route: route_call for route_call in route_calls if not route_call.refusal}
        staged = [] if held else inbound_events(matches, received.id, kept)
        row = mx_store.inbound_row(received, headers, deliveries=delivery_entries(matches), held=held,
                                   recipients=list(outcome.taken))
        delivered = [d for route_call in kept.values() for d in delivery_rows(route_call)]
        try:
            await mx_store.commit(self.db, row, staged, delivered)
        except Exception:
            log.exception("storing inbound message %s from %s failed", received.id, received.remote_ip)
            return replies.INTERNAL
        await self.relay.publish_committed(staged)
        if outcome.refused:
            log.info("inbound %s: refused for %s", received.id, ", ".join(sorted(outcome.refused)))
        log.info("inbound %s from %s for %s: %d routes%s", received.id, received.remote_ip,
                 ", ".join(outcome.taken), len({m.route.id for m in matches}), " (held)" if held else "")
        return accepted(received.id)

    async def _call_sync_routes(self, received: payload.Received, outcome: Outcome) -> list[RouteCall]:
        """Ask every taken route's synchronous endpoints, all at once, within the time budget."""
        by_route: dict[str, list[RecipientMatch]] = {}
        for m in outcome.matches():
            by_route.setdefault(m.route.id, []).append(m)
        calls: list[tuple[RouteCall, list[str], bytes]] = []
        for found in by_route.values():
            route = found[0].route
            endpoints = list(dict.fromkeys(e for a in route.webhook_actions() if a.sync for e in a.endpoints))
            if not endpoints:
                continue
            form = next(a.payload for a in route.webhook_actions() if a.sync)
            event = events.InboundMessage(
                account=route.account, message=received.id, route=route.id, route_name=route.name,
                recipients=[m.address for m in found], endpoints=endpoints, payload=form)
            ref = payload.RouteRef(route.id, route.name, [m.address for m in found], found[0].tag,
                                   dict(found[0].captures))
            body = await asyncio.to_thread(
                body_for, event, received, ref, base_url=self._base_url(), inline_max=self.policy.inline_max,
                service_url=self.policy.service_url)
            calls.append((RouteCall(event), endpoints, body))
        if calls:
            await asyncio.gather(*(self.sync.call_route(rc, ids, body) for rc, ids, body in calls))
        return [rc for rc, _, _ in calls]

    def _base_url(self) -> str:
        return self.policy.service_url or f"http://{self.policy.hostname}"

    async def stop(self) -> None:
        await self.sync.close()


def inbound_events(matches: Sequence[RecipientMatch], message_id: str,
                   sync: dict[str, RouteCall]) -> list[events.Event]:
    """One ``InboundMessage`` per route and payload form with webhook actions; endpoints a
    synchronous call already delivered to are left out (a sync route's event keeps its id)."""
    by_route: dict[str, list[RecipientMatch]] = {}
    for m in matches:
        by_route.setdefault(m.route.id, []).append(m)
    staged: list[events.Event] = []
    for found in by_route.values():
        route = found[0].route
        route_call = sync.get(route.id)
        done = route_call.delivered_to() if route_call else set()
        by_form: dict[str, list[str]] = {}
        for action in route.webhook_actions():
            wanted = by_form.setdefault(action.payload, [])
            wanted += [e for e in action.endpoints if e not in wanted and e not in done]
        for form, endpoints in by_form.items():
            if not endpoints:
                continue
            recipients = list(dict.fromkeys(m.address for m in found))
            if route_call is not None and route_call.event.payload == form:
                # The same event id as the synchronous call: one delivery per endpoint in the log.
                staged.append(events.InboundMessage(
                    id=route_call.event.id, occurred_at=route_call.event.occurred_at, account=route.account,
                    message=message_id, route=route.id, route_name=route.name, recipients=recipients,
                    endpoints=endpoints, payload=route_call.event.payload))
                continue
            staged.append(events.InboundMessage(
                account=route.account, message=message_id, route=route.id, route_name=route.name,
                recipients=recipients, endpoints=endpoints, payload="raw" if form == "raw" else "json"))
    return staged


def _tls_version(server: SMTP) -> str | None:
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    return str(ssl_object.version() or "TLS")
