"""Webhook deliveries: stored before the first attempt, retried from the database.

    event ──store()──► pending ──POST──► delivered
                          │  ▲
                          ▼  │ (backoff with jitter, see retry.py)
                        retrying ──(retry window spent)──► failed

A delivery goes either to a webhook endpoint (``endpoint_id``, signed with the
endpoint's secret) or to the EmailEngine-style settings/account URL
(``endpoint_id`` NULL, signed with the service secret).

Throughput comes from doing per *batch* what used to be done per delivery:
the events waiting on the bus are stored in one transaction, and the
deliveries that have a free slot (see lanes.py) are claimed by that same
INSERT, so they are POSTed right after the commit without another round trip
and no other replica can take them.  The rest stay unclaimed: this replica
claims them a few at a time as slots free up (``claim_for``), the due-poller
of any replica picks them up otherwise (``claim_due``), and retries always
come from the database.  Outcomes are recorded by recorder.py, many per
transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, lifecycle, service_settings, urls
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.db.models import WebhookEndpoint
from mailgate_common.settings import Settings
from mailgate_common.telemetry import current_traceparent
from mailgate_webhooks import retry
from mailgate_webhooks.lanes import Lanes
from mailgate_webhooks.payload import render, wants
from mailgate_webhooks.signing import signed_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("mailgate.webhooks")

WEBHOOK_ATTEMPTS = Counter("mailgate_webhook_attempts_total", "Webhook POSTs", ["result"])
WEBHOOK_SECONDS = Histogram("mailgate_webhook_seconds", "Webhook POST latency")
MAX_BODY_EXCERPT = 2048
USER_AGENT = "mailgate-webhooks/0.1"
# Trace contexts kept for deliveries stored here but POSTed later (spilled).
MAX_REMEMBERED_CONTEXTS = 20000

# Destinations that may be attempted now: settings/account URLs always, endpoints
# only when enabled and not backed off.
_READY = """
    (d.endpoint_id IS NULL OR EXISTS (
        SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled
          AND e.failing_since IS NULL AND (e.backoff_until IS NULL OR e.backoff_until <= now())))
"""

# One statement stores a whole batch; ``claim`` marks the rows this replica has a
# slot for, so they are claimed in the same commit that stores them.  DO NOTHING
# without a target covers both once-indexes (per URL and per endpoint): an event
# the bus redelivers is not stored twice.
STORE_SQL = text(
    """
    INSERT INTO webhook_deliveries (event_id, event, account_id, queue_id, url, endpoint_id, payload,
                                    claim_token, claimed_until)
    SELECT v.event_id, v.event, v.account_id, v.queue_id, v.url, v.endpoint_id, v.payload,
           CASE WHEN v.claim THEN CAST(:token AS text) END,
           CASE WHEN v.claim THEN now() + make_interval(secs => :hold) END
    FROM unnest(CAST(:event_ids AS text[]), CAST(:names AS text[]), CAST(:accounts AS text[]),
                CAST(:queue_ids AS text[]), CAST(:urls AS text[]), CAST(:endpoint_ids AS text[]),
                CAST(:payloads AS bytea[]), CAST(:claims AS boolean[]))
         AS v(event_id, event, account_id, queue_id, url, endpoint_id, payload, claim)
    ON CONFLICT DO NOTHING
    RETURNING id, event_id, coalesce(endpoint_id, url) AS dest, claim_token IS NOT NULL AS claimed,
              retry_from
    """
)

# What a claimed delivery needs for its POST, with its endpoint's *current* URL,
# secrets and headers (a fixed typo or a rotated secret applies to waiting
# retries too).
_JOB_SELECT = """
    SELECT c.id, c.event_id, c.event, c.payload, c.attempts_made, c.retry_from, c.endpoint_id,
           coalesce(e.url, c.url) AS url, e.id IS NOT NULL AS endpoint_found, e.secret,
           CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret,
           e.headers
    FROM claimed c LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id
    ORDER BY c.id
"""

_CLAIMED_COLUMNS = "d.id, d.event_id, d.event, d.payload, d.attempts_made, d.retry_from, d.endpoint_id, d.url"


def _claim_for_sql(where: str) -> Any:
    """Claim up to :n due deliveries of one destination (oldest first), with their jobs."""
    return text(
        f"""
        WITH claimed AS (
            UPDATE webhook_deliveries d SET claim_token = :token,
                   claimed_until = now() + make_interval(secs => :hold)
            WHERE d.id IN (
                SELECT d.id FROM webhook_deliveries d
                WHERE {where} AND d.state IN ('pending', 'retrying') AND d.next_attempt_at <= now()
                  AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND {_READY}
                ORDER BY d.next_attempt_at, d.id
                LIMIT :n
                FOR UPDATE SKIP LOCKED)
            RETURNING {_CLAIMED_COLUMNS}
        )
        {_JOB_SELECT}
        """
    )


CLAIM_FOR_ENDPOINT_SQL = _claim_for_sql("d.endpoint_id = :dest")
CLAIM_FOR_URL_SQL = _claim_for_sql("d.endpoint_id IS NULL AND d.url = :dest")

LOAD_JOBS_SQL = text(
    f"""
    WITH claimed AS (
        SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries d
        WHERE d.id = ANY(CAST(:ids AS bigint[])) AND d.claim_token = :token
    )
    {_JOB_SELECT}
    """
)

# Round-robin over destinations (ORDER BY rn), each capped at the per-endpoint
# concurrency minus what is already claimed anywhere (claims are global).
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
          -- A fresh row waits a moment for the replica that stored it (which
          -- claims it as soon as it has a slot, keeping the event's trace).
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

RELEASE_SQL = text(
    """
    UPDATE webhook_deliveries SET claim_token = NULL, claimed_until = NULL
    WHERE id = ANY(CAST(:ids AS bigint[])) AND claim_token = :token
    """
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to POST one delivery."""

    url: str
    secret: str
    previous_secret: str | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery, ready to POST."""

    delivery_id: int
    token: str
    dest: str  # concurrency key: endpoint id, or the URL
    endpoint_id: str | None
    event_id: str
    event: str
    payload: bytes
    attempts_made: int
    retry_from: datetime
    target: Target
    claimed_at: float  # time.monotonic() when the claim was taken
    context: otel_context.Context | None  # the event's trace, when known


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: the delivery's new state and its attempt row."""

    job: Job
    state: str
    attempt: int
    status: int | None
    error: str | None
    excerpt: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    duration_ms: int
    started_at: datetime

    @property
    def ok(self) -> bool:
        return self.state == lifecycle.WEBHOOK_DELIVERED


def endpoint_matches(endpoint: WebhookEndpoint, name: str, account: str | None) -> bool:
    """Is this (enabled) endpoint subscribed to this event name and account?"""
    account_key = account or ""
    return (
        (endpoint.account_id is None or endpoint.account_id == account_key)
        and ("*" in endpoint.events or name in endpoint.events)
        and (not endpoint.accounts or account_key in endpoint.accounts)
    )


SUBSCRIPTION_SETTINGS = ["webhooks", "webhooksEnabled", "webhookEvents", "serviceUrl", "serviceSecret"]
# The settings, the accounts' own webhook URLs, and whether any endpoint could match.
SUBSCRIPTIONS_SQL = """
SELECT
  (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM settings WHERE key = ANY($1::text[]))::text,
  (SELECT coalesce(jsonb_object_agg(id, webhooks), '{}') FROM accounts
    WHERE id = ANY($2::text[]) AND webhooks IS NOT NULL)::text,
  EXISTS (SELECT 1 FROM webhook_endpoints
          WHERE enabled AND events && $3::text[] AND (account_id IS NULL OR account_id = ANY($2::text[])))
"""


@dataclass(frozen=True, slots=True)
class Subscriptions:
    config: dict[str, Any]  # SUBSCRIPTION_SETTINGS
    account_urls: dict[str, str]
    endpoints: bool  # some endpoint may want one of the events: read them

    def urls_for(self, event: events.Event, name: str) -> list[str]:
        """The settings and account webhook URLs that want this event."""
        found: list[str] = []
        config = self.config
        if config["webhooks"] and config["webhooksEnabled"] and wants(config["webhookEvents"], name):
            found.append(config["webhooks"])
        account_url = self.account_urls.get(event.account or "")
        if account_url and account_url not in found:
            found.append(account_url)
        return found

    def any_for(self, wanted: list[tuple[int, events.Event, str]]) -> bool:
        return self.endpoints or any(self.urls_for(event, name) for _, event, name in wanted)


@dataclass(slots=True)
class _Planned:
    event_index: int
    event: events.Event
    name: str
    url: str
    endpoint_id: str | None
    payload: bytes
    target: Target | None  # None: not attempted now (no slot, or endpoint backed off)
    ready: bool  # the destination takes attempts now (else it waits for a probe)

    @property
    def dest(self) -> str:
        return self.endpoint_id or self.url


# HTTP(S)_PROXY / NO_PROXY, honoured as operators expect; read once at start.
_PROXIES = urllib.request.getproxies_environment()


def _proxy_for(url: str) -> str | None:
    parts = urlsplit(url)
    proxy = _PROXIES.get(parts.scheme)
    if proxy is None or urllib.request.proxy_bypass_environment(parts.hostname or "", _PROXIES):
        return None
    return proxy


class Dispatcher:
    def __init__(self, settings: Settings, db: Database, lanes: Lanes) -> None:
        self.settings = settings
        self.db = db
        self.lanes = lanes
        self.sealer = Sealer.from_settings(settings.secret, settings.secret_previous)
        # Created on the running loop at first use (aiohttp binds a session to its loop).
        self._http: aiohttp.ClientSession | None = None
        self._opened: dict[bytes, str] = {}
        self._contexts: dict[int, otel_context.Context] = {}

    @property
    def hold(self) -> float:
        # Longer than one attempt can take (POST is capped at webhook_timeout).
        return self.settings.webhook_timeout + 5

    def usable(self, job: Job) -> bool:
        """Is the job's claim still good for a whole attempt?"""
        return time.monotonic() - job.claimed_at < self.hold - self.settings.webhook_timeout - 1

    def _open(self, sealed: bytes) -> str:
        # Opening (AES-GCM + JSON) once per sealed value, not once per POST.
        secret = self._opened.get(sealed)
        if secret is None:
            if len(self._opened) > 1000:
                self._opened.clear()
            secret = self._opened[sealed] = str(self.sealer.open(sealed)["secret"])
        return secret

    def _endpoint_target(self, endpoint: WebhookEndpoint) -> Target:
        previous = None
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret is not None and expires is not None and expires > events.utcnow():
            previous = self._open(endpoint.previous_secret)
        return Target(
            endpoint.url,
            self._open(endpoint.secret),
            previous,
            {str(k): str(v) for k, v in (endpoint.headers or {}).items()},
        )

    # -- storing ---------------------------------------------------------------

    async def store(self, batch: Sequence[tuple[events.Event, otel_context.Context | None]]) -> list[list[Job]]:
        """Record one delivery per event and matching destination, in one transaction.

        Returns, per event, the deliveries claimed for an immediate POST: their
        slots are already taken.  Those without a slot are stored unclaimed and
        their destination marked spilled.
        """
        named = [(i, event, event.webhook_name()) for i, (event, _) in enumerate(batch)]
        wanted = [(i, event, name) for i, event, name in named if name is not None]
        result: list[list[Job]] = [[] for _ in batch]
        if not wanted:
            return result
        subscribed = await self._subscriptions(wanted)
        if not subscribed.any_for(wanted):
            return result
        taken: list[str] = []
        try:
            async with self.db.transaction() as session:
                plans = await self._plan(session, wanted, taken, subscribed)
                if not plans:
                    return result
                token = secrets.token_hex(8)
                rows = (await session.execute(STORE_SQL, {
                    "token": token,
                    "hold": self.hold,
                    "event_ids": [p.event.id for p in plans],
                    "names": [p.name for p in plans],
                    "accounts": [p.event.account for p in plans],
                    "queue_ids": [getattr(p.event, "queue_id", None) for p in plans],
                    "urls": [p.url for p in plans],
                    "endpoint_ids": [p.endpoint_id for p in plans],
                    "payloads": [p.payload for p in plans],
                    "claims": [p.target is not None for p in plans],
                })).all()
        except BaseException:
            for dest in taken:
                self.lanes.give_back(dest)
            raise
        claimed_at = time.monotonic()
        stored = {(row.event_id, row.dest): row for row in rows}
        for plan in plans:
            # pop: the same event twice in one batch (a redelivery) is one row, one POST.
            row = stored.pop((plan.event.id, plan.dest), None)
            context = batch[plan.event_index][1]
            if row is None:  # stored before (the bus redelivered the event)
                if plan.target is not None:
                    self.lanes.give_back(plan.dest)
                continue
            if plan.target is None:
                if plan.ready:
                    self.lanes.spill(plan.dest)
                    self._remember(row.id, context)
                continue
            result[plan.event_index].append(Job(
                row.id, token, plan.dest, plan.endpoint_id, plan.event.id, plan.name, plan.payload, 0,
                row.retry_from, plan.target, claimed_at, context,
            ))
        return result

    async def _subscriptions(self, wanted: list[tuple[int, events.Event, str]]) -> Subscriptions:
        """Who might want these events, in one prepared statement outside any
        transaction: a batch nobody subscribes to (every event, when no webhook is
        set up; every messageSent, when only bounces are wanted) costs just this."""
        accounts = sorted({event.account or "" for _, event, _ in wanted})
        names = sorted({"*", *(name for _, _, name in wanted)})
        async with self.db.statement_connection() as conn:
            row = await conn.fetchrow(SUBSCRIPTIONS_SQL, SUBSCRIPTION_SETTINGS, accounts, names)
        assert row is not None
        return Subscriptions(
            service_settings.with_defaults(SUBSCRIPTION_SETTINGS, json.loads(row[0])),
            {a: u for a, u in json.loads(row[1]).items() if u},
            bool(row[2]),
        )

    async def _plan(
        self, session: AsyncSession, wanted: list[tuple[int, events.Event, str]], taken: list[str],
        subscribed: Subscriptions,
    ) -> list[_Planned]:
        """Which deliveries to store, and which of them get a slot now (appended to ``taken``)."""
        config = subscribed.config
        candidates: list[tuple[WebhookEndpoint, bool]] = []
        if subscribed.endpoints:
            names = {name for _, _, name in wanted}
            is_ready = and_(
                WebhookEndpoint.failing_since.is_(None),
                or_(WebhookEndpoint.backoff_until.is_(None), WebhookEndpoint.backoff_until <= func.now()),
            )
            # A superset (enabled, any of these names, these accounts); endpoint_matches decides.
            candidates = list((await session.execute(
                select(WebhookEndpoint, is_ready.label("ready")).where(
                    WebhookEndpoint.enabled.is_(True),
                    WebhookEndpoint.events.overlap(["*", *names]),
                    or_(WebhookEndpoint.account_id.is_(None),
                        WebhookEndpoint.account_id.in_([a or "" for a in {e.account for _, e, _ in wanted}])),
                )
            )).tuples())
        ready_endpoints = {endpoint.id for endpoint, ready_now in candidates if ready_now}
        endpoint_targets: dict[str, Target] = {}
        service_secret: str | None = config["serviceSecret"]
        service_url = config["serviceUrl"] or self.settings.service_url
        plans: list[_Planned] = []
        for index, event, name in wanted:
            urls_ = subscribed.urls_for(event, name)
            endpoints = [e for e, _ in candidates if endpoint_matches(e, name, event.account)]
            if not urls_ and not endpoints:
                continue
            body = render(event, name, service_url)
            for url in urls_:
                target = None
                if self.lanes.room(url) > 0:
                    if service_secret is None:
                        service_secret = await service_settings.service_secret(session)
                    target = Target(url, service_secret, None, {})
                    self.lanes.take(url)
                    taken.append(url)
                plans.append(_Planned(index, event, name, url, None, body, target, True))
            for endpoint in endpoints:
                target = None
                ready = endpoint.id in ready_endpoints
                if ready and self.lanes.room(endpoint.id) > 0:
                    target = endpoint_targets.get(endpoint.id)
                    if target is None:
                        target = endpoint_targets[endpoint.id] = self._endpoint_target(endpoint)
                    self.lanes.take(endpoint.id)
                    taken.append(endpoint.id)
                plans.append(_Planned(index, event, name, endpoint.url, endpoint.id, body, target, ready))
        return plans

    def _remember(self, delivery_id: int, context: otel_context.Context | None) -> None:
        if context is None:
            return
        if len(self._contexts) >= MAX_REMEMBERED_CONTEXTS:
            # Oldest first (dicts keep insertion order); another replica may have sent them.
            for stale in list(self._contexts)[: MAX_REMEMBERED_CONTEXTS // 10]:
                del self._contexts[stale]
        self._contexts[delivery_id] = context

    # -- claiming --------------------------------------------------------------

    async def claim_for(self, dest: str, n: int) -> list[Job]:
        """Claim up to ``n`` due deliveries of one destination (its slots are already taken)."""
        token = secrets.token_hex(8)
        sql = CLAIM_FOR_URL_SQL if dest.startswith(("http://", "https://")) else CLAIM_FOR_ENDPOINT_SQL
        async with self.db.transaction(durable=False) as session:
            rows = (await session.execute(sql, {"token": token, "hold": self.hold, "dest": dest, "n": n})).all()
            return await self._jobs(session, rows, token)

    async def claim_due(self, limit: int) -> list[Job]:
        """Retries and probes that are due, round-robin across destinations."""
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
            if not claimed:
                return []
            rows = (await session.execute(LOAD_JOBS_SQL, {"ids": claimed, "token": token})).all()
            return await self._jobs(session, rows, token)

    async def _jobs(self, session: AsyncSession, rows: Sequence[Any], token: str) -> list[Job]:
        claimed_at = time.monotonic()
        service_secret: str | None = None
        jobs: list[Job] = []
        for row in rows:
            if row.endpoint_id is None:
                if service_secret is None:
                    service_secret = await service_settings.service_secret(session)
                target = Target(row.url, service_secret, None, {})
            elif not row.endpoint_found:
                continue  # deleted meanwhile (its deliveries go with it)
            else:
                headers = row.headers if not isinstance(row.headers, str) else json.loads(row.headers)
                target = Target(
                    row.url,
                    self._open(row.secret),
                    self._open(row.previous_secret) if row.previous_secret is not None else None,
                    {str(k): str(v) for k, v in (headers or {}).items()},
                )
            jobs.append(Job(
                row.id, token, row.endpoint_id or row.url, row.endpoint_id, row.event_id, row.event,
                bytes(row.payload), row.attempts_made, row.retry_from, target, claimed_at,
                self._contexts.pop(row.id, None),
            ))
        return jobs

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hand claimed deliveries back unattempted (to whoever polls next)."""
        by_token: dict[str, list[int]] = {}
        for job in jobs:
            by_token.setdefault(job.token, []).append(job.delivery_id)
        async with self.db.transaction(durable=False) as session:
            for token, ids in by_token.items():
                await session.execute(RELEASE_SQL, {"ids": ids, "token": token})

    # -- attempting ------------------------------------------------------------

    async def _send(self, job: Job) -> tuple[int | None, str | None, str | None]:
        """POST once: (status, error, response excerpt)."""
        target = job.target
        headers = {
            **target.headers,
            **signed_headers(target.secret, job.event_id, int(time.time()), job.payload,
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
                async with self.http.post(target.url, data=job.payload, headers=headers,
                                          allow_redirects=False, proxy=_proxy_for(target.url)) as resp:
                    # Bounded: a subscriber cannot make us buffer a huge body.
                    excerpt = await resp.content.read(MAX_BODY_EXCERPT)
                    return resp.status, None, excerpt.decode("utf-8", "replace")
        except urls.UnsafeUrl as exc:
            return None, f"refused: {exc}", None
        except TimeoutError:
            return None, f"timeout after {self.settings.webhook_timeout:g}s", None
        except aiohttp.ClientConnectorError as exc:
            # Worded as our earlier client did: operators (and tests) know "ConnectError".
            return None, f"ConnectError: {exc}", None
        except (OSError, aiohttp.ClientError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                # Keep-alive connections, one per slot of a destination, reused between POSTs.
                connector=aiohttp.TCPConnector(
                    limit=self.settings.webhook_concurrency * 2,
                    limit_per_host=self.settings.webhook_endpoint_concurrency * 2,
                ),
                headers={"user-agent": USER_AGENT},
                # Proxies come from _proxy_for: aiohttp's trust_env re-reads the
                # environment and ~/.netrc on every request (a tenth of our CPU per
                # webhook), and netrc credentials have no business in a webhook.
                trust_env=False,
                auto_decompress=False,
            )
        return self._http

    async def post(self, job: Job) -> Outcome:
        """One attempt; the outcome is for the recorder to store."""
        attempt = job.attempts_made + 1
        started = events.utcnow()
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
            "webhook POST",
            context=job.context,
            kind=trace.SpanKind.CLIENT,
            attributes={"mailgate.event_id": job.event_id, "mailgate.event": job.event,
                        "mailgate.attempt": attempt},
        ) as span:
            status, error, excerpt = await self._send(job)
            span.set_attribute("http.response.status_code", status or 0)
        duration = time.perf_counter() - t0
        WEBHOOK_SECONDS.observe(duration)
        ok = status is not None and 200 <= status < 300
        if not ok and error is None:
            error = f"HTTP {status}"
        WEBHOOK_ATTEMPTS.labels("ok" if ok else "error").inc()
        now = events.utcnow()
        due = None
        if ok:
            state = lifecycle.WEBHOOK_DELIVERED
        else:
            s = self.settings
            due = retry.next_attempt_at(
                attempt, job.retry_from, now, s.webhook_retry_base, s.webhook_retry_max, s.webhook_retry_window
            )
            state = lifecycle.WEBHOOK_FAILED if due is None else lifecycle.WEBHOOK_RETRYING
        # Failures at INFO; one line per success would cost more than the POST's bookkeeping.
        log.log(logging.DEBUG if ok else logging.INFO, "webhook %s %s -> %s", job.event, job.target.url,
                status or error)
        return Outcome(job, state, attempt, status, error, excerpt, due, now if ok else None,
                       int(duration * 1000), started)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
