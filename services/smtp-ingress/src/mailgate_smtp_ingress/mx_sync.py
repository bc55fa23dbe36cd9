"""Synchronous routes: the application answers during DATA and its answer is the SMTP reply.

The body is the one the webhooks service sends for this route (EmailEngine's
envelope around ``payload.build``, or the raw MIME), signed the same way
(``webhook_signing.signed_headers`` with the endpoint's secret), and its event id
is the id of the ``InboundMessage`` event the door stages for the route, so the
delivery log shows one delivery per endpoint however it was made.

The answer maps to SMTP as the status contract says (docs/inbound.md): 2xx → accepted
(recorded as delivered, never sent again); HTTP 4xx → a temporary reply; HTTP 5xx → a
permanent one; no answer within MAILGATE_MX_SYNC_TIMEOUT → ``451 4.4.1``.  Refusing
during the transaction is what keeps a refusal from ever bouncing to a forged sender.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import msgspec

from mailgate_common import events, urls
from mailgate_common.crypto import CredentialError, Sealer
from mailgate_common.db import Database
from mailgate_common.inbound import payload
from mailgate_common.text import clean_text
from mailgate_common.webhook_signing import signed_headers

log = logging.getLogger("mailgate.smtp_ingress")

USER_AGENT = "mailgate-mx/0.1"
MAX_REPLY_TEXT = 200
MAX_EXCERPT = 2048
TIMEOUT_REPLY = "451 4.4.1 The recipient's application did not answer in time, try again later"
_TEMPORARY = frozenset({421, 450, 451, 452})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    headers: dict[str, str]
    secret: str
    previous: str | None


@dataclass(frozen=True)
class Call:
    """One endpoint's answer to a synchronous call."""

    endpoint: Endpoint
    status: int | None
    reply: str | None  # the SMTP reply it asks for; None when accepted (2xx)
    excerpt: str | None
    error: str | None
    started_at: datetime
    duration_ms: int
    body: bytes

    @property
    def accepted(self) -> bool:
        return self.reply is None


@dataclass
class RouteCall:
    """A route's synchronous webhook calls and the event they are made under."""

    event: events.InboundMessage
    calls: list[Call] = field(default_factory=list)

    @property
    def refusal(self) -> str | None:
        """The reply of the first endpoint that refused (temporary refusals win: they are retried)."""
        replies = [c.reply for c in self.calls if c.reply is not None]
        temporary = [r for r in replies if r.startswith("4")]
        chosen = temporary or replies
        return chosen[0] if chosen else None

    def delivered_to(self) -> set[str]:
        return {c.endpoint.id for c in self.calls if c.accepted}


def answer_text(response_text: str, content_type: str) -> str | None:
    """The app's one-line text/plain answer, cleaned, as reply text; None when there is none."""
    if not content_type.lower().startswith("text/plain"):
        return None
    lines = response_text.strip().splitlines()
    if len(lines) != 1:
        return None
    text = _CONTROL.sub("", lines[0]).strip()
    return text if text and len(text) <= MAX_REPLY_TEXT and text.isascii() else None


def smtp_reply(status: int, text: str | None) -> str | None:
    """The SMTP reply an HTTP status asks for (the status contract); None for 2xx."""
    if 200 <= status < 300:
        return None
    if 400 <= status < 500:
        code, enhanced = (status, f"4.{_detail(status)}") if status in _TEMPORARY else (451, "4.7.1")
        return f"{code} {enhanced} {text or 'The recipient application asks to try again later'}"
    if 550 <= status <= 554:
        return f"{status} 5.{_detail(status)} {text or 'The recipient application refused the message'}"
    if status >= 500:
        return f"550 5.7.1 {text or 'The recipient application refused the message'}"
    # 1xx/3xx: not an answer the contract knows; a redirect is never followed.
    return f"451 4.4.1 {text or 'The recipient application gave no usable answer, try again later'}"


def _detail(status: int) -> str:
    return {421: "3.2", 450: "2.0", 451: "3.0", 452: "3.1", 550: "7.1", 551: "1.6", 552: "3.4",
            553: "1.3", 554: "7.1"}.get(status, "7.1")


def body_for(event: events.InboundMessage, received: payload.Received, ref: payload.RouteRef, *,
             base_url: str, inline_max: int, service_url: str | None) -> bytes:
    """What the webhooks service would POST for ``event`` (the render() envelope)."""
    if event.payload == "raw":
        return payload.raw_body(received)
    data = payload.build(received, ref, base_url=base_url, inline_max=inline_max)
    return msgspec.json.encode({
        "serviceUrl": service_url or None,
        "account": event.account,
        "date": events.iso(event.occurred_at),
        **events.webhook_context(event),
        "event": "inboundMessage",
        "eventId": event.id,
        "data": data,
    })


class SyncCaller:
    def __init__(self, db: Database, sealer: Sealer, *, timeout: float, allow_private: bool,
                 client: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.sealer = sealer
        self.timeout = timeout
        self.allow_private = allow_private
        self.client = client or httpx.AsyncClient(follow_redirects=False, headers={"user-agent": USER_AGENT})

    async def close(self) -> None:
        await self.client.aclose()

    async def endpoints(self, ids: Sequence[str]) -> dict[str, Endpoint]:
        """The enabled endpoints among ``ids`` whose secret opens (the others are left to the
        webhooks service, which records why they cannot be delivered to)."""
        async with self.db.statement_connection() as conn:
            rows = await conn.fetch(
                "SELECT id, url, headers::text, secret, CASE WHEN previous_secret_expires_at > now() "
                "THEN previous_secret END FROM webhook_endpoints WHERE enabled AND id = ANY($1::text[])",
                list(ids))
        found: dict[str, Endpoint] = {}
        for row in rows:
            try:
                secret = str(self.sealer.open(bytes(row[3]))["secret"])
                previous = str(self.sealer.open(bytes(row[4]))["secret"]) if row[4] is not None else None
            except (CredentialError, KeyError):
                log.warning("webhook endpoint %s: secret cannot be opened; left to the webhooks service", row[0])
                continue
            headers = {str(k): str(v) for k, v in msgspec.json.decode(row[2] or "{}").items()}
            found[row[0]] = Endpoint(row[0], row[1], headers, secret, previous)
        return found

    async def call(self, endpoint: Endpoint, event: events.InboundMessage, body: bytes) -> Call:
        started_at = events.utcnow()
        started = time.perf_counter()
        headers = {
            **endpoint.headers,
            **signed_headers(endpoint.secret, event.id, int(time.time()), body, endpoint.previous),
            "x-ee-wh-event-id": event.id,
        }
        if event.payload == "raw":
            headers["content-type"] = "message/rfc822"

        def done(status: int | None, reply: str | None, excerpt: str | None, error: str | None) -> Call:
            return Call(endpoint, status, reply, excerpt, error, started_at,
                        int((time.perf_counter() - started) * 1000), body)

        try:
            await urls.check_url(endpoint.url, self.allow_private)
            response = await asyncio.wait_for(
                self.client.post(endpoint.url, content=body, headers=headers), self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return done(None, TIMEOUT_REPLY, None, f"no answer within {self.timeout:g} s")
        except Exception as exc:
            log.info("synchronous route call to %s failed: %r", endpoint.url, exc)
            return done(None, TIMEOUT_REPLY, None, f"{type(exc).__name__}: {exc}"[:500])
        text = response.text[:MAX_EXCERPT]
        reply = smtp_reply(response.status_code, answer_text(text, response.headers.get("content-type", "")))
        return done(response.status_code, reply, clean_text(text) or None, None)

    async def call_route(self, route_call: RouteCall, endpoint_ids: Sequence[str], body: bytes) -> None:
        found = await self.endpoints(endpoint_ids)
        route_call.calls += await asyncio.gather(
            *(self.call(found[i], route_call.event, body) for i in endpoint_ids if i in found))


def delivery_rows(route_call: RouteCall) -> list[dict[str, Any]]:
    """The webhook_deliveries rows of the calls answered 2xx, recorded as delivered."""
    return [
        {"event_id": route_call.event.id, "event": "inboundMessage", "account_id": route_call.event.account,
         "url": c.endpoint.url, "endpoint_id": c.endpoint.id, "payload": c.body, "status": c.status,
         "excerpt": c.excerpt, "duration_ms": c.duration_ms, "started_at": c.started_at}
        for c in route_call.calls if c.accepted
    ]
