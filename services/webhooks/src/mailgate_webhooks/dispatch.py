"""Webhook deliveries: stored before the first attempt, retried from the database.

    event ──store()──► pending ──attempt()──► delivered
                          │  ▲
                          ▼  │ (backoff with jitter)
                        retrying ──(attempts spent)──► failed
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
from prometheus_client import Counter, Histogram
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert

from mailgate_common import events, lifecycle, service_settings
from mailgate_common.backoff import backoff_delay
from mailgate_common.db import Database
from mailgate_common.db.models import Account, WebhookAttempt, WebhookDelivery
from mailgate_common.settings import Settings
from mailgate_webhooks.payload import render, wants
from mailgate_webhooks.signing import signed_headers

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = Counter("mailgate_webhook_attempts_total", "Webhook POSTs", ["result"])
WEBHOOK_SECONDS = Histogram("mailgate_webhook_seconds", "Webhook POST latency")
MAX_BODY_EXCERPT = 2048
PER_ENDPOINT_CONCURRENCY = 8

CLAIM_DUE_SQL = text(
    """
    UPDATE webhook_deliveries SET claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold)
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state IN ('pending', 'retrying') AND next_attempt_at <= now()
          AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    token: str


class Dispatcher:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.http = httpx.AsyncClient(
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency * 2),
            headers={"user-agent": "mailgate-webhooks/0.1"},
        )
        self._per_endpoint: dict[str, asyncio.Semaphore] = {}

    @property
    def hold(self) -> float:
        return self.settings.webhook_timeout + 30

    async def store(self, event: events.Event) -> list[int]:
        """Record one delivery per matching endpoint; returns the new ones' ids."""
        name = event.webhook_name()
        if name is None:
            return []
        async with self.db.transaction() as session:
            config = await service_settings.read(
                session, ["webhooks", "webhooksEnabled", "webhookEvents", "serviceUrl"]
            )
            urls: list[str] = []
            if config["webhooks"] and config["webhooksEnabled"] and wants(config["webhookEvents"], name):
                urls.append(config["webhooks"])
            if event.account:
                account_url = await session.scalar(
                    select(Account.webhooks).where(Account.id == event.account)
                )
                if account_url and account_url not in urls:
                    urls.append(account_url)
            if not urls:
                return []
            body = render(event, name, config["serviceUrl"] or self.settings.service_url)
            queue_id = getattr(event, "queue_id", None)
            ids: list[int] = []
            for url in urls:
                new_id = await session.scalar(
                    insert(WebhookDelivery)
                    .values(
                        event_id=event.id,
                        event=name,
                        account_id=event.account,
                        queue_id=queue_id,
                        url=url,
                        payload=body,
                    )
                    .on_conflict_do_nothing(constraint="webhook_delivery_once")
                    .returning(WebhookDelivery.id)
                )
                if new_id is not None:
                    ids.append(new_id)
        return ids

    async def claim(self, delivery_id: int) -> Claim | None:
        token = secrets.token_hex(8)
        async with self.db.transaction() as session:
            claimed = await session.scalar(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.state.in_((lifecycle.WEBHOOK_PENDING, lifecycle.WEBHOOK_RETRYING)),
                    (WebhookDelivery.claimed_until.is_(None))
                    | (WebhookDelivery.claimed_until < events.utcnow()),
                )
                .values(claim_token=token, claimed_until=events.utcnow() + timedelta(seconds=self.hold))
                .returning(WebhookDelivery.id)
            )
        return Claim(delivery_id, token) if claimed else None

    async def claim_due(self, limit: int) -> list[Claim]:
        token = secrets.token_hex(8)
        async with self.db.transaction() as session:
            ids = (await session.execute(
                CLAIM_DUE_SQL, {"token": token, "hold": self.hold, "limit": limit}
            )).scalars()
            return [Claim(i, token) for i in ids]

    async def attempt(self, claim: Claim) -> None:
        async with self.db.transaction() as session:
            row = await session.get(WebhookDelivery, claim.delivery_id)
            secret = await service_settings.service_secret(session)
        if row is None or row.claim_token != claim.token:
            return
        endpoint = self._per_endpoint.setdefault(
            httpx.URL(row.url).host, asyncio.Semaphore(PER_ENDPOINT_CONCURRENCY)
        )
        async with endpoint:
            await self._post(claim, row, secret)

    async def _post(self, claim: Claim, row: WebhookDelivery, secret: str) -> None:
        attempt = row.attempts_made + 1
        started = events.utcnow()
        t0 = time.perf_counter()
        status: int | None = None
        error: str | None = None
        excerpt: str | None = None
        headers = signed_headers(secret, row.event_id, int(time.time()), row.payload)
        try:
            async with self.http.stream("POST", row.url, content=row.payload, headers=headers) as resp:
                status = resp.status_code
                excerpt = await _read_bounded(resp)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration = time.perf_counter() - t0
        WEBHOOK_SECONDS.observe(duration)
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"HTTP {status}"
        WEBHOOK_ATTEMPTS.labels("ok" if ok else "error").inc()
        values: dict[str, object] = {
            "attempts_made": attempt,
            "last_status": status,
            "last_error": error,
            "claim_token": None,
            "claimed_until": None,
        }
        if ok:
            values.update(state=lifecycle.WEBHOOK_DELIVERED, delivered_at=events.utcnow())
        elif attempt >= self.settings.webhook_attempts:
            values.update(state=lifecycle.WEBHOOK_FAILED)
        else:
            values.update(
                state=lifecycle.WEBHOOK_RETRYING,
                next_attempt_at=events.utcnow()
                + timedelta(
                    seconds=backoff_delay(
                        attempt, self.settings.webhook_retry_base, self.settings.webhook_retry_max
                    )
                ),
            )
        async with self.db.transaction() as session:
            updated = await session.scalar(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == row.id, WebhookDelivery.claim_token == claim.token)
                .values(**values)
                .returning(WebhookDelivery.id)
            )
            if updated is None:
                return
            session.add(
                WebhookAttempt(
                    delivery_id=row.id,
                    attempt=attempt,
                    status_code=status,
                    error=error,
                    response_excerpt=excerpt,
                    duration_ms=int(duration * 1000),
                    started_at=started,
                )
            )
        log.info("webhook %s %s -> %s", row.event, row.url, status or error)

    async def close(self) -> None:
        await self.http.aclose()


async def _read_bounded(resp: httpx.Response) -> str:
    """Read at most MAX_BODY_EXCERPT bytes: a subscriber cannot make us buffer a huge body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_EXCERPT:
            break
    return b"".join(chunks)[:MAX_BODY_EXCERPT].decode("utf-8", "replace")
