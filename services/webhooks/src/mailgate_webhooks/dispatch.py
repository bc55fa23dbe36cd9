"""Webhook deliveries: stored before the first attempt, retried from the database.

    event ──store()──► pending ──attempt()──► delivered
                          │  ▲
                          ▼  │ (backoff with jitter, see retry.py)
                        retrying ──(retry window spent)──► failed

A delivery goes either to a webhook endpoint (``endpoint_id``, signed with the
endpoint's secret) or to the EmailEngine-style settings/account URL
(``endpoint_id`` NULL, signed with the service secret).  The due-poller picks
deliveries round-robin across destinations and never more than the
per-endpoint concurrency for one destination, so a slow endpoint cannot take
every slot; endpoints marked failing only ever get a single probe.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, lifecycle, service_settings, urls
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import Account, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from mailgate_common.settings import Settings
from mailgate_common.telemetry import current_traceparent
from mailgate_webhooks import retry
from mailgate_webhooks.payload import render, wants
from mailgate_webhooks.signing import signed_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("mailgate.webhooks")

WEBHOOK_ATTEMPTS = Counter("mailgate_webhook_attempts_total", "Webhook POSTs", ["result"])
WEBHOOK_SECONDS = Histogram("mailgate_webhook_seconds", "Webhook POST latency")
MAX_BODY_EXCERPT = 2048

# Destinations that may be attempted now: settings/account URLs always, endpoints
# only when enabled and not backed off.
_READY = """
    (d.endpoint_id IS NULL OR EXISTS (
        SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled
          AND e.failing_since IS NULL AND (e.backoff_until IS NULL OR e.backoff_until <= now())))
"""

CLAIM_ONE_SQL = text(
    f"""
    UPDATE webhook_deliveries d SET claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold)
    WHERE d.id = :id AND d.state IN ('pending', 'retrying') AND d.next_attempt_at <= now()
      AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND {_READY}
    RETURNING d.id
    """
)

# Round-robin over destinations (ORDER BY rn), each capped at the per-endpoint
# concurrency minus what is already in flight anywhere (claims are global).
CLAIM_DUE_SQL = text(
    f"""
    WITH inflight AS (
        SELECT coalesce(endpoint_id, url) AS dest, count(*) AS n FROM webhook_deliveries
        WHERE state IN ('pending', 'retrying') AND claimed_until >= now()
        GROUP BY 1
    ), ranked AS (
        SELECT d.id, d.next_attempt_at, coalesce(d.endpoint_id, d.url) AS dest,
               row_number() OVER (PARTITION BY coalesce(d.endpoint_id, d.url)
                                  ORDER BY d.next_attempt_at, d.id) AS rn
        FROM webhook_deliveries d
        WHERE d.state IN ('pending', 'retrying') AND d.next_attempt_at <= now()
          -- A fresh row is being tried right now by the replica that stored it.
          AND (d.state <> 'pending' OR d.created_at < now() - interval '2 seconds')
          AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND {_READY}
    ), picked AS (
        SELECT r.id FROM ranked r LEFT JOIN inflight i ON i.dest = r.dest
        WHERE r.rn <= :per_endpoint - coalesce(i.n, 0)
        ORDER BY r.rn, r.next_attempt_at
        LIMIT :limit
    )
    UPDATE webhook_deliveries SET claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold)
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE id IN (SELECT id FROM picked) AND state IN ('pending', 'retrying')
          AND (claimed_until IS NULL OR claimed_until < now())
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)

# One replica wins the right to probe a failing endpoint whose backoff expired;
# holding backoff_until for the probe's duration keeps every other replica out.
TAKE_PROBES_SQL = text(
    """
    UPDATE webhook_endpoints SET backoff_until = now() + make_interval(secs => :hold)
    WHERE id IN (
        SELECT id FROM webhook_endpoints
        WHERE enabled AND failing_since IS NOT NULL AND backoff_until <= now()
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)

CLAIM_PROBE_SQL = text(
    """
    UPDATE webhook_deliveries SET claim_token = :token,
           claimed_until = now() + make_interval(secs => :hold)
    WHERE id = (
        SELECT id FROM webhook_deliveries
        WHERE endpoint_id = :endpoint AND state IN ('pending', 'retrying')
          AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY next_attempt_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    token: str


@dataclass(frozen=True)
class Target:
    """Where and how to POST one delivery."""

    key: str  # concurrency key: endpoint id, or the URL
    # The endpoint's current URL: a fixed typo applies to waiting retries too.
    url: str
    secret: str
    previous_secret: str | None
    headers: dict[str, str]


def matching_endpoints(name: str, account: str | None) -> Any:
    """Enabled endpoints subscribed to this event name and account."""
    account_ok = or_(
        WebhookEndpoint.accounts.is_(None),
        func.cardinality(WebhookEndpoint.accounts) == 0,
        WebhookEndpoint.accounts.contains([account or ""]),
    )
    return select(WebhookEndpoint).where(
        WebhookEndpoint.enabled.is_(True),
        or_(WebhookEndpoint.account_id.is_(None), WebhookEndpoint.account_id == (account or "")),
        WebhookEndpoint.events.overlap(["*", name]),
        account_ok,
    )


class Dispatcher:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        self.http = httpx.AsyncClient(
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=settings.webhook_concurrency * 2),
            headers={"user-agent": "mailgate-webhooks/0.1"},
        )
        self._per_endpoint: dict[str, asyncio.Semaphore] = {}

    @property
    def hold(self) -> float:
        # Longer than one attempt can take (POST is capped at webhook_timeout).
        return self.settings.webhook_timeout + 5

    async def store(self, event: events.Event) -> list[int]:
        """Record one delivery per matching destination; returns the new ones' ids."""
        name = event.webhook_name()
        if name is None:
            return []
        async with self.db.transaction() as session:
            config = await service_settings.read(
                session, ["webhooks", "webhooksEnabled", "webhookEvents", "serviceUrl"]
            )
            urls_: list[str] = []
            if config["webhooks"] and config["webhooksEnabled"] and wants(config["webhookEvents"], name):
                urls_.append(config["webhooks"])
            if event.account:
                account_url = await session.scalar(
                    select(Account.webhooks).where(Account.id == event.account)
                )
                if account_url and account_url not in urls_:
                    urls_.append(account_url)
            endpoints = list(await session.scalars(matching_endpoints(name, event.account)))
            if not urls_ and not endpoints:
                return []
            body = render(event, name, config["serviceUrl"] or self.settings.service_url)
            common = {
                "event_id": event.id,
                "event": name,
                "account_id": event.account,
                "queue_id": getattr(event, "queue_id", None),
                "payload": body,
            }
            ids: list[int] = []
            for url in urls_:
                ids += await session.scalars(
                    insert(WebhookDelivery)
                    .values(url=url, **common)
                    .on_conflict_do_nothing(
                        index_elements=["event_id", "url"], index_where=text("endpoint_id IS NULL")
                    )
                    .returning(WebhookDelivery.id)
                )
            for endpoint in endpoints:
                ids += await session.scalars(
                    insert(WebhookDelivery)
                    .values(url=endpoint.url, endpoint_id=endpoint.id, **common)
                    .on_conflict_do_nothing(
                        index_elements=["event_id", "endpoint_id"],
                        index_where=text("endpoint_id IS NOT NULL"),
                    )
                    .returning(WebhookDelivery.id)
                )
        return ids

    async def claim(self, delivery_id: int) -> Claim | None:
        token = secrets.token_hex(8)
        async with self.db.transaction(durable=False) as session:
            claimed = await session.scalar(
                CLAIM_ONE_SQL, {"token": token, "hold": self.hold, "id": delivery_id}
            )
        return Claim(delivery_id, token) if claimed else None

    async def claim_due(self, limit: int) -> list[Claim]:
        token = secrets.token_hex(8)
        async with self.db.transaction(durable=False) as session:
            claimed: list[int] = []
            for endpoint in (await session.execute(
                TAKE_PROBES_SQL, {"hold": self.hold, "limit": limit}
            )).scalars():
                probe = await session.scalar(
                    CLAIM_PROBE_SQL, {"token": token, "hold": self.hold, "endpoint": endpoint}
                )
                if probe is None:
                    # Nothing waiting to probe with: let the next real delivery be the probe.
                    await session.execute(
                        update(WebhookEndpoint)
                        .where(WebhookEndpoint.id == endpoint)
                        .values(failing_since=None, backoff_until=None)
                    )
                else:
                    log.info("probing failing webhook endpoint %s", endpoint)
                    claimed.append(probe)
            if len(claimed) < limit:
                claimed += (await session.execute(
                    CLAIM_DUE_SQL,
                    {
                        "token": token,
                        "hold": self.hold,
                        "limit": limit - len(claimed),
                        "per_endpoint": self.settings.webhook_endpoint_concurrency,
                    },
                )).scalars()
            return [Claim(i, token) for i in claimed]

    async def _target(self, session: AsyncSession, row: WebhookDelivery) -> Target | None:
        if row.endpoint_id is None:
            return Target(row.url, row.url, await service_settings.service_secret(session), None, {})
        endpoint = await session.get(WebhookEndpoint, row.endpoint_id)
        if endpoint is None:
            return None
        previous = None
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret is not None and expires is not None and expires > events.utcnow():
            previous = self.sealer.open(endpoint.previous_secret)["secret"]
        return Target(
            endpoint.id,
            endpoint.url,
            self.sealer.open(endpoint.secret)["secret"],
            previous,
            {str(k): str(v) for k, v in (endpoint.headers or {}).items()},
        )

    async def attempt(self, claim: Claim) -> None:
        async with self.db.transaction() as session:
            row = await session.get(WebhookDelivery, claim.delivery_id)
            if row is None or row.claim_token != claim.token:
                return
            target = await self._target(session, row)
        if target is None:
            return
        limit = self._per_endpoint.setdefault(
            target.key, asyncio.Semaphore(self.settings.webhook_endpoint_concurrency)
        )
        if limit.locked():
            # The endpoint is busy: waiting here could outlast the claim and let
            # another replica POST the same delivery; the poller paces it instead.
            await self.release(claim)
            return
        async with limit:
            await self._post(claim, row, target)

    async def release(self, claim: Claim) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == claim.delivery_id, WebhookDelivery.claim_token == claim.token)
                .values(claim_token=None, claimed_until=None)
            )

    async def _send(self, row: WebhookDelivery, target: Target) -> tuple[int | None, str | None, str | None]:
        """POST once: (status, error, response excerpt)."""
        headers = {
            **target.headers,
            **signed_headers(target.secret, row.event_id, int(time.time()), row.payload,
                             target.previous_secret),
        }
        traceparent = current_traceparent()
        if traceparent:
            # Lets a subscriber continue the message's trace in its own systems.
            headers["traceparent"] = traceparent
        try:
            # DNS may have changed since the URL was accepted.
            await urls.check_url(target.url, self.settings.webhooks_allow_private)
            async with asyncio.timeout(self.settings.webhook_timeout):
                async with self.http.stream("POST", target.url, content=row.payload, headers=headers) as resp:
                    return resp.status_code, None, await _read_bounded(resp)
        except urls.UnsafeUrl as exc:
            return None, f"refused: {exc}", None
        except TimeoutError:
            return None, f"timeout after {self.settings.webhook_timeout:g}s", None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", None

    async def _post(self, claim: Claim, row: WebhookDelivery, target: Target) -> None:
        attempt = row.attempts_made + 1
        started = events.utcnow()
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
            "webhook POST",
            kind=trace.SpanKind.CLIENT,
            attributes={"mailgate.event_id": row.event_id, "mailgate.event": row.event,
                        "mailgate.attempt": attempt},
        ) as span:
            status, error, excerpt = await self._send(row, target)
            span.set_attribute("http.response.status_code", status or 0)
        duration = time.perf_counter() - t0
        WEBHOOK_SECONDS.observe(duration)
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"HTTP {status}"
        WEBHOOK_ATTEMPTS.labels("ok" if ok else "error").inc()
        values: dict[str, object] = {
            "url": target.url,
            "attempts_made": attempt,
            "last_status": status,
            "last_error": error,
            "claim_token": None,
            "claimed_until": None,
        }
        now = events.utcnow()
        if ok:
            values.update(state=lifecycle.WEBHOOK_DELIVERED, delivered_at=now)
        else:
            s = self.settings
            due = retry.next_attempt_at(
                attempt, row.retry_from, now, s.webhook_retry_base, s.webhook_retry_max, s.webhook_retry_window
            )
            if due is None:
                values.update(state=lifecycle.WEBHOOK_FAILED)
            else:
                values.update(state=lifecycle.WEBHOOK_RETRYING, next_attempt_at=due)
        async with self.db.transaction(durable=False) as session:
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
            if row.endpoint_id is not None:
                await self._record_health(session, row.endpoint_id, ok)
        log.info("webhook %s %s -> %s", row.event, target.url, status or error)

    async def _record_health(self, session: AsyncSession, endpoint_id: str, ok: bool) -> None:
        endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None:
            return
        if ok:
            if endpoint.consecutive_failures == 0 and endpoint.failing_since is None:
                return
            if endpoint.failing_since is not None:
                log.info("webhook endpoint %s recovered", endpoint_id)
            endpoint.consecutive_failures = 0
            endpoint.first_failure_at = endpoint.failing_since = endpoint.backoff_until = None
            # The endpoint is back: release its waiting retries now rather than at
            # their backed-off times; the due-poller's per-endpoint cap paces them.
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.state == lifecycle.WEBHOOK_RETRYING,
                    WebhookDelivery.next_attempt_at > func.now(),
                )
                .values(next_attempt_at=func.now())
            )
            return
        s = self.settings
        health = retry.after_failure(
            retry.EndpointHealth(
                endpoint.consecutive_failures,
                endpoint.first_failure_at,
                endpoint.failing_since,
                endpoint.backoff_until,
            ),
            events.utcnow(),
            s.webhook_failing_threshold,
            s.webhook_failing_after,
            s.webhook_retry_base,
            s.webhook_retry_max,
        )
        if health.failing_since is not None and endpoint.failing_since is None:
            log.warning("webhook endpoint %s is failing; backing off until %s", endpoint_id,
                        events.iso(health.backoff_until))
        endpoint.consecutive_failures = health.consecutive_failures
        endpoint.first_failure_at = health.first_failure_at
        endpoint.failing_since = health.failing_since
        endpoint.backoff_until = health.backoff_until

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
