"""Every statement the webhooks service runs on webhook_deliveries, webhook_endpoints
and webhook_attempts, in one style: asyncpg prepared statements with ``$n``
parameters on a connection from :meth:`Database.statement_connection`, rows
returned as small dataclasses.

A delivery row moves ``pending → (retrying)* → delivered | failed``.  While an
attempt runs it is *claimed*: ``claim_token`` names the claimant and
``claimed_until`` bounds the claim, so a replica that dies mid-POST leaves a row
the others pick up once the claim lapses; an outcome is recorded only while the
token is still the recorder's own.

Writes whose loss in a database crash is harmless (claims, attempt records,
endpoint health: at worst one more POST of a delivery whose claim lapsed) commit
without waiting for the WAL flush (:func:`lazy_transaction`); storing new
deliveries is durable, since the event is acknowledged to the broker after it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from mailgate_common import service_settings
from mailgate_common.db import Database
from mailgate_webhooks.retry import EndpointHealth

# The settings the webhooks service reads (EmailEngine's /v1/settings names).
SUBSCRIPTION_SETTINGS = ["webhooks", "webhooksEnabled", "webhookEvents", "serviceUrl", "serviceSecret"]


@asynccontextmanager
async def connection(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """One pooled connection; each statement commits on its own (durably)."""
    async with db.statement_connection() as conn:
        yield conn


@asynccontextmanager
async def lazy_transaction(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose commit does not wait for the WAL to reach disk."""
    async with db.statement_connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        yield conn


# -- who wants which event ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriptions:
    """The stored subscriptions that may want a batch of events."""

    settings: dict[str, Any]  # SUBSCRIPTION_SETTINGS, defaults filled in
    account_urls: dict[str, str]  # account id -> the account's own webhook URL
    endpoints_may_match: bool  # some enabled endpoint wants one of the names: read them


# The settings, the accounts' own webhook URLs, and whether any endpoint could match.
_SUBSCRIPTIONS = """
SELECT
  (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM settings WHERE key = ANY($1::text[]))::text,
  (SELECT coalesce(jsonb_object_agg(id, webhooks), '{}') FROM accounts
    WHERE id = ANY($2::text[]) AND webhooks IS NOT NULL)::text,
  EXISTS (SELECT 1 FROM webhook_endpoints
          WHERE enabled AND events && $3::text[] AND (account_id IS NULL OR account_id = ANY($2::text[])))
"""


async def subscriptions(conn: asyncpg.Connection, accounts: list[str], names: list[str]) -> Subscriptions:
    """``names``: the event names, plus "*"; ``accounts``: "" for events of no account."""
    row = await conn.fetchrow(_SUBSCRIPTIONS, SUBSCRIPTION_SETTINGS, accounts, names)
    assert row is not None
    return Subscriptions(
        service_settings.with_defaults(SUBSCRIPTION_SETTINGS, json.loads(row[0])),
        {account: url for account, url in json.loads(row[1]).items() if url},
        bool(row[2]),
    )


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """An enabled endpoint that may want some of the events of a batch."""

    id: str
    url: str
    account_id: str | None
    events: list[str]
    accounts: list[str] | None
    headers: dict[str, Any]
    secret: bytes  # sealed
    previous_secret: bytes | None  # sealed; only while the rotation overlap lasts
    ready: bool  # takes attempts now (not failing, not backed off)
    exclude_machine: bool = False  # no opens and clicks flagged as machine-made


_ENDPOINT_COLUMNS = """
SELECT id, url, account_id, events, accounts, headers::text, secret,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret END,
       failing_since IS NULL AND (backoff_until IS NULL OR backoff_until <= now()),
       exclude_machine
FROM webhook_endpoints
"""
# A superset (enabled, any of these names, these accounts); plan.endpoint_matches decides.
_ENDPOINTS = _ENDPOINT_COLUMNS + (
    "WHERE enabled AND events && $1::text[] AND (account_id IS NULL OR account_id = ANY($2::text[]))"
)
# The endpoints routed events (inboundMessage) name, by id: only enabled ones (a disabled
# or deleted endpoint gets nothing), whatever their event filters.
_ENDPOINTS_BY_ID = _ENDPOINT_COLUMNS + "WHERE enabled AND id = ANY($1::text[])"


def _endpoint(r: asyncpg.Record) -> EndpointRow:
    return EndpointRow(
        id=r[0], url=r[1], account_id=r[2], events=list(r[3]),
        accounts=list(r[4]) if r[4] is not None else None, headers=json.loads(r[5] or "{}"),
        secret=bytes(r[6]), previous_secret=bytes(r[7]) if r[7] is not None else None, ready=r[8],
        exclude_machine=r[9],
    )


async def endpoints_for(conn: asyncpg.Connection, names: list[str], accounts: list[str]) -> list[EndpointRow]:
    return [_endpoint(r) for r in await conn.fetch(_ENDPOINTS, names, accounts)]


# -- routed events (inboundMessage) ---------------------------------------------------


async def endpoints_by_id(conn: asyncpg.Connection, ids: list[str]) -> dict[str, EndpointRow]:
    return {r[0]: _endpoint(r) for r in await conn.fetch(_ENDPOINTS_BY_ID, ids)}


async def service_url_setting(conn: asyncpg.Connection) -> str | None:
    """The ``serviceUrl`` setting (EmailEngine's), None when unset."""
    value = await conn.fetchval("SELECT value #>> '{}' FROM settings WHERE key = 'serviceUrl'")
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class InboundRow:
    """An ``inbound_messages`` row without its raw bytes (fetched in size-bounded groups)."""

    id: str
    received_at: datetime
    remote_ip: str | None
    helo: str | None
    mail_from: str
    rcpt_to: list[str]
    tls: str | None
    auth: dict[str, Any]
    spam: dict[str, Any]
    automated: str | None
    deliveries: list[dict[str, Any]]
    raw_size: int


_INBOUND = """
SELECT id, received_at, remote_ip, helo, mail_from, rcpt_to, tls, auth::text, spam::text, automated,
       deliveries::text, octet_length(raw)
FROM inbound_messages WHERE id = ANY($1::text[])
"""


async def inbound_messages(conn: asyncpg.Connection, ids: list[str]) -> dict[str, InboundRow]:
    """The stored messages of a batch's routed events (one statement for the batch)."""
    return {
        r[0]: InboundRow(
            id=r[0], received_at=r[1], remote_ip=r[2], helo=r[3], mail_from=r[4], rcpt_to=list(r[5] or []),
            tls=r[6], auth=json.loads(r[7] or "{}"), spam=json.loads(r[8] or "{}"), automated=r[9],
            deliveries=json.loads(r[10] or "[]"), raw_size=r[11] or 0,
        )
        for r in await conn.fetch(_INBOUND, ids)
    }


async def inbound_raws(conn: asyncpg.Connection, ids: list[str]) -> dict[str, bytes]:
    return {r[0]: bytes(r[1]) for r in await conn.fetch(
        "SELECT id, raw FROM inbound_messages WHERE id = ANY($1::text[])", ids)}


# -- storing --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewDelivery:
    event_id: str
    event: str  # EmailEngine event name
    account_id: str | None
    queue_id: str | None
    url: str
    endpoint_id: str | None
    payload: bytes
    claim: bool  # claimed for this replica in the same statement


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    id: int
    event_id: str
    dest: str  # endpoint id, or the URL
    claimed: bool
    retry_from: datetime


# One statement stores a whole batch; ``claim`` marks the rows this replica has a
# slot for, so they are claimed in the same commit that stores them.  DO NOTHING
# without a target covers both once-indexes (per URL and per endpoint): an event
# the bus redelivers is not stored twice.
_INSERT = """
INSERT INTO webhook_deliveries (event_id, event, account_id, queue_id, url, endpoint_id, payload,
                                claim_token, claimed_until)
SELECT v.event_id, v.event, v.account_id, v.queue_id, v.url, v.endpoint_id, v.payload,
       CASE WHEN v.claim THEN $1::text END,
       CASE WHEN v.claim THEN now() + make_interval(secs => $2::float8) END
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[],
            $10::boolean[])
     AS v(event_id, event, account_id, queue_id, url, endpoint_id, payload, claim)
ON CONFLICT DO NOTHING
RETURNING id, event_id, coalesce(endpoint_id, url), claim_token IS NOT NULL, retry_from
"""


async def insert_deliveries(
    conn: asyncpg.Connection, deliveries: Sequence[NewDelivery], token: str, hold: float
) -> list[StoredDelivery]:
    """Deliveries already stored (a redelivered event) are left out of the answer."""
    rows = await conn.fetch(
        _INSERT, token, hold,
        [d.event_id for d in deliveries], [d.event for d in deliveries], [d.account_id for d in deliveries],
        [d.queue_id for d in deliveries], [d.url for d in deliveries], [d.endpoint_id for d in deliveries],
        [d.payload for d in deliveries], [d.claim for d in deliveries],
    )
    return [StoredDelivery(id=r[0], event_id=r[1], dest=r[2], claimed=r[3], retry_from=r[4]) for r in rows]


# -- claiming -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A claimed delivery with its endpoint's *current* URL, secrets and headers
    (a fixed typo or a rotated secret applies to waiting retries too)."""

    id: int
    event_id: str
    event: str
    payload: bytes
    attempts_made: int
    retry_from: datetime
    endpoint_id: str | None
    url: str
    endpoint_found: bool  # False: the endpoint was deleted meanwhile
    secret: bytes | None
    previous_secret: bytes | None
    headers: dict[str, Any]
    service_secret: str | None  # for a settings/account URL


# Destinations that may be attempted now: settings/account URLs always, endpoints
# only when enabled and not backed off.
_READY = """
    (d.endpoint_id IS NULL OR EXISTS (
        SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled
          AND e.failing_since IS NULL AND (e.backoff_until IS NULL OR e.backoff_until <= now())))
"""

_CLAIMED_COLUMNS = "d.id, d.event_id, d.event, d.payload, d.attempts_made, d.retry_from, d.endpoint_id, d.url"

# What a claimed delivery needs for its POST (``claimed`` is a CTE of _CLAIMED_COLUMNS):
# an endpoint's secrets and headers, or the service secret for a settings/account URL.
_CLAIMED_JOBS = """
    SELECT c.id, c.event_id, c.event, c.payload, c.attempts_made, c.retry_from, c.endpoint_id,
           coalesce(e.url, c.url), e.id IS NOT NULL, e.secret,
           CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END,
           e.headers::text,
           CASE WHEN c.endpoint_id IS NULL
                THEN (SELECT value #>> '{}' FROM settings WHERE key = 'serviceSecret') END
    FROM claimed c LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id
    ORDER BY c.id
"""


def _claim_for(where: str) -> str:
    """Claim up to $4 due deliveries of one destination ($3), oldest first, with their jobs."""
    return f"""
        WITH claimed AS (
            UPDATE webhook_deliveries d SET claim_token = $1::text,
                   claimed_until = now() + make_interval(secs => $2::float8)
            WHERE d.id IN (
                SELECT d.id FROM webhook_deliveries d
                WHERE {where} AND d.state IN ('pending', 'retrying') AND d.next_attempt_at <= now()
                  AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND {_READY}
                ORDER BY d.next_attempt_at, d.id
                LIMIT $4
                FOR UPDATE SKIP LOCKED)
            RETURNING {_CLAIMED_COLUMNS}
        )
        {_CLAIMED_JOBS}
    """


_CLAIM_FOR_ENDPOINT = _claim_for("d.endpoint_id = $3::text")
_CLAIM_FOR_URL = _claim_for("d.endpoint_id IS NULL AND d.url = $3::text")

_LOAD_CLAIMED = f"""
    WITH claimed AS (
        SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries d
        WHERE d.id = ANY($1::bigint[]) AND d.claim_token = $2::text
    )
    {_CLAIMED_JOBS}
"""

# Round-robin over destinations (ORDER BY rn), each capped at the per-endpoint
# concurrency ($4) minus what is already claimed anywhere (claims are global).
_CLAIM_DUE = f"""
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
        WHERE r.rn <= $4 - coalesce(i.n, 0)
        ORDER BY r.rn, r.next_attempt_at
        LIMIT $3
    )
    UPDATE webhook_deliveries SET claim_token = $1::text,
           claimed_until = now() + make_interval(secs => $2::float8)
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE id IN (SELECT id FROM picked) AND state IN ('pending', 'retrying')
          AND (claimed_until IS NULL OR claimed_until < now())
        FOR UPDATE SKIP LOCKED)
    RETURNING id
"""

# One replica wins the right to probe a failing endpoint whose backoff expired;
# holding backoff_until for the probe's duration keeps every other replica out.
_TAKE_PROBES = """
    UPDATE webhook_endpoints SET backoff_until = now() + make_interval(secs => $1::float8)
    WHERE id IN (
        SELECT id FROM webhook_endpoints
        WHERE enabled AND failing_since IS NOT NULL AND backoff_until <= now()
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING id
"""

_CLAIM_PROBE = """
    UPDATE webhook_deliveries SET claim_token = $1::text,
           claimed_until = now() + make_interval(secs => $2::float8)
    WHERE id = (
        SELECT id FROM webhook_deliveries
        WHERE endpoint_id = $3::text AND state IN ('pending', 'retrying')
          AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY next_attempt_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id
"""

# Nothing waits to probe with: the endpoint's next real delivery is the probe.
_UNMARK_FAILING = """
    UPDATE webhook_endpoints SET failing_since = NULL, backoff_until = NULL, updated_at = now()
    WHERE id = $1::text
"""

_RELEASE = """
    UPDATE webhook_deliveries SET claim_token = NULL, claimed_until = NULL
    WHERE id = ANY($1::bigint[]) AND claim_token = $2::text
"""


def _claimed(rows: Sequence[asyncpg.Record]) -> list[ClaimedDelivery]:
    return [
        ClaimedDelivery(
            id=r[0], event_id=r[1], event=r[2], payload=bytes(r[3]), attempts_made=r[4], retry_from=r[5],
            endpoint_id=r[6], url=r[7], endpoint_found=r[8],
            secret=bytes(r[9]) if r[9] is not None else None,
            previous_secret=bytes(r[10]) if r[10] is not None else None,
            headers=json.loads(r[11]) if r[11] else {}, service_secret=r[12],
        )
        for r in rows
    ]


async def claim_for(
    conn: asyncpg.Connection, dest: str, is_endpoint: bool, n: int, token: str, hold: float
) -> list[ClaimedDelivery]:
    """Up to ``n`` due deliveries of one destination (an endpoint id or a URL)."""
    sql = _CLAIM_FOR_ENDPOINT if is_endpoint else _CLAIM_FOR_URL
    return _claimed(await conn.fetch(sql, token, hold, dest, n))


@dataclass(frozen=True, slots=True)
class DueClaims:
    deliveries: list[ClaimedDelivery]
    probing: list[str]  # failing endpoints probed with one of these deliveries


async def claim_due(
    conn: asyncpg.Connection, limit: int, per_destination: int, token: str, hold: float
) -> DueClaims:
    """Probes of failing endpoints whose backoff expired, then due deliveries
    round-robin across destinations (run inside one transaction)."""
    claimed: list[int] = []
    probing: list[str] = []
    for (endpoint_id,) in await conn.fetch(_TAKE_PROBES, hold, limit):
        probe = await conn.fetchval(_CLAIM_PROBE, token, hold, endpoint_id)
        if probe is None:
            await conn.execute(_UNMARK_FAILING, endpoint_id)
        else:
            claimed.append(probe)
            probing.append(endpoint_id)
    if len(claimed) < limit:
        claimed += [r[0] for r in await conn.fetch(_CLAIM_DUE, token, hold, limit - len(claimed), per_destination)]
    if not claimed:
        return DueClaims([], probing)
    return DueClaims(_claimed(await conn.fetch(_LOAD_CLAIMED, claimed, token)), probing)


async def release(conn: asyncpg.Connection, ids: list[int], token: str) -> None:
    """Hand claimed deliveries back unattempted."""
    await conn.execute(_RELEASE, ids, token)


# -- recording ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: int
    claim_token: str
    state: str  # the delivery's new state
    attempt: int
    status: int | None
    error: str | None
    excerpt: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    url: str
    duration_ms: int
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Recorded:
    delivery_id: int
    endpoint_id: str | None
    health_may_change: bool  # a failure, or an endpoint not healthy now


# Each outcome is the delivery's new state (only while the recorder's claim
# still holds it) plus its attempt row, for a whole batch in one statement.
_RECORD = """
    WITH v AS (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[], $6::text[],
                             $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::int[],
                             $12::timestamptz[])
        AS v(id, token, state, attempt, status, error, excerpt, next_attempt_at, delivered_at, url,
             duration_ms, started_at)
    ), done AS (
        UPDATE webhook_deliveries d
        SET state = v.state, attempts_made = v.attempt, last_status = v.status, last_error = v.error,
            url = v.url, claim_token = NULL, claimed_until = NULL,
            next_attempt_at = coalesce(v.next_attempt_at, d.next_attempt_at),
            delivered_at = coalesce(v.delivered_at, d.delivered_at)
        FROM v
        WHERE d.id = v.id AND d.claim_token = v.token
        RETURNING d.id, d.endpoint_id
    ), logged AS (
        INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, response_excerpt,
                                      duration_ms, started_at)
        SELECT v.id, v.attempt, v.status, v.error, v.excerpt, v.duration_ms, v.started_at
        FROM v JOIN done ON done.id = v.id
    )
    -- The common all-good batch then takes no endpoint lock.
    SELECT done.id, done.endpoint_id,
           e.id IS NOT NULL AND (v.state <> 'delivered' OR e.consecutive_failures <> 0
                                 OR e.failing_since IS NOT NULL)
    FROM done JOIN v ON v.id = done.id LEFT JOIN webhook_endpoints e ON e.id = done.endpoint_id
"""


async def record_attempts(conn: asyncpg.Connection, attempts: Sequence[AttemptRow]) -> list[Recorded]:
    """Only deliveries still claimed by each row's token are written: a claim lost
    (taken over after it lapsed) is the new claimant's to record."""
    rows = await conn.fetch(
        _RECORD,
        [a.delivery_id for a in attempts], [a.claim_token for a in attempts], [a.state for a in attempts],
        [a.attempt for a in attempts], [a.status for a in attempts], [a.error for a in attempts],
        [a.excerpt for a in attempts], [a.next_attempt_at for a in attempts],
        [a.delivered_at for a in attempts], [a.url for a in attempts], [a.duration_ms for a in attempts],
        [a.started_at for a in attempts],
    )
    return [Recorded(delivery_id=r[0], endpoint_id=r[1], health_may_change=r[2]) for r in rows]


# Locked in id order: concurrent recorders (other replicas) cannot deadlock.
_LOCK_HEALTH = """
    SELECT id, consecutive_failures, first_failure_at, failing_since, backoff_until
    FROM webhook_endpoints WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
"""

_WRITE_HEALTH = """
    UPDATE webhook_endpoints e
    SET consecutive_failures = v.failures, first_failure_at = v.first_failure_at,
        failing_since = v.failing_since, backoff_until = v.backoff_until, updated_at = now()
    FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
         AS v(id, failures, first_failure_at, failing_since, backoff_until)
    WHERE e.id = v.id
"""

# The endpoint is back: its waiting retries go now rather than at their
# backed-off times; the due-poller's per-endpoint cap paces them.
_RELEASE_WAITING = """
    UPDATE webhook_deliveries SET next_attempt_at = now()
    WHERE endpoint_id = ANY($1::text[]) AND state = 'retrying' AND next_attempt_at > now()
"""


async def lock_endpoint_health(conn: asyncpg.Connection, endpoint_ids: list[str]) -> dict[str, EndpointHealth]:
    return {
        r[0]: EndpointHealth(consecutive_failures=r[1], first_failure_at=r[2], failing_since=r[3],
                             backoff_until=r[4])
        for r in await conn.fetch(_LOCK_HEALTH, sorted(endpoint_ids))
    }


async def write_endpoint_health(conn: asyncpg.Connection, health: dict[str, EndpointHealth]) -> None:
    if health:
        rows = list(health.items())
        await conn.execute(
            _WRITE_HEALTH, [i for i, _ in rows], [h.consecutive_failures for _, h in rows],
            [h.first_failure_at for _, h in rows], [h.failing_since for _, h in rows],
            [h.backoff_until for _, h in rows],
        )


async def release_waiting_retries(conn: asyncpg.Connection, endpoint_ids: list[str]) -> None:
    if endpoint_ids:
        await conn.execute(_RELEASE_WAITING, endpoint_ids)


# -- upkeep ---------------------------------------------------------------------------

# Deliveries that waited behind a failing endpoint past their retry window are
# never attempted again, so they would otherwise stay "retrying" forever.
_EXPIRE = """
    UPDATE webhook_deliveries SET state = 'failed',
           last_error = coalesce(last_error || '; ', '') || 'retry window spent'
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state IN ('pending', 'retrying')
          AND retry_from < now() - make_interval(secs => $1::float8)
          AND (claimed_until IS NULL OR claimed_until < now())
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
"""

# Attempts go with their delivery (ON DELETE CASCADE).
_PRUNE = """
    DELETE FROM webhook_deliveries
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state IN ('delivered', 'failed')
          AND created_at < now() - make_interval(secs => $1::float8)
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
"""


def _count(status: str) -> int:
    # asyncpg answers a command with its tag, e.g. "UPDATE 12" / "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])


async def expire_spent(conn: asyncpg.Connection, window: float, batch: int) -> int:
    return _count(await conn.execute(_EXPIRE, window, batch))


async def prune_finished(conn: asyncpg.Connection, older_than: float, batch: int) -> int:
    return _count(await conn.execute(_PRUNE, older_than, batch))
