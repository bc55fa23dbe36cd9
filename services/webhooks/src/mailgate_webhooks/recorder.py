"""Recording attempt outcomes: many per transaction.

Each outcome is the delivery's new state (only while this replica's claim
still holds it) plus its attempt row; both are written for a whole batch by
one statement (data-modifying CTEs).  The endpoint health of the endpoints in
the batch is then updated in the same transaction, applying the outcomes in
order.  Commits are not durable, as before batching: losing one in a database
crash means at worst one more POST of a delivery whose claim lapsed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, lifecycle
from mailgate_common.db import Database
from mailgate_common.db.models import WebhookDelivery, WebhookEndpoint
from mailgate_common.settings import Settings
from mailgate_webhooks import retry
from mailgate_webhooks.dispatch import Outcome

log = logging.getLogger(__name__)

RECORD_SQL = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:states AS text[]),
            CAST(:attempts AS int[]), CAST(:statuses AS int[]), CAST(:errors AS text[]),
            CAST(:excerpts AS text[]), CAST(:next_attempts AS timestamptz[]),
            CAST(:delivered AS timestamptz[]), CAST(:urls AS text[]), CAST(:durations AS int[]),
            CAST(:started AS timestamptz[]))
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
    -- Whether the endpoint's health may need writing (a failure, or an endpoint
    -- not healthy now): the common all-good batch then takes no endpoint lock.
    SELECT done.id, e.id IS NOT NULL AND (v.state <> 'delivered' OR e.consecutive_failures <> 0
                                          OR e.failing_since IS NOT NULL) AS health
    FROM done JOIN v ON v.id = done.id LEFT JOIN webhook_endpoints e ON e.id = done.endpoint_id
    """
)


class Recorder:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    async def write(self, outcomes: Sequence[Outcome]) -> list[None]:
        async with self.db.transaction(durable=False) as session:
            rows = (await session.execute(RECORD_SQL, {
                "ids": [o.job.delivery_id for o in outcomes],
                "tokens": [o.job.token for o in outcomes],
                "states": [o.state for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "errors": [o.error for o in outcomes],
                "excerpts": [o.excerpt for o in outcomes],
                "next_attempts": [o.next_attempt_at for o in outcomes],
                "delivered": [o.delivered_at for o in outcomes],
                "urls": [o.job.target.url for o in outcomes],
                "durations": [o.duration_ms for o in outcomes],
                "started": [o.started_at for o in outcomes],
            })).all()
            # A delivery whose claim was lost (taken over after it lapsed) is the
            # new claimant's to record, health included.
            done = {row.id for row in rows}
            flagged = {row.id for row in rows if row.health}
            touched = {o.job.endpoint_id for o in outcomes if o.job.delivery_id in flagged}
            mine = [o for o in outcomes if o.job.delivery_id in done and o.job.endpoint_id in touched]
            if mine:
                await self._record_health(session, mine)
        return [None] * len(outcomes)

    async def _record_health(self, session: AsyncSession, outcomes: list[Outcome]) -> None:
        ids = sorted({o.job.endpoint_id for o in outcomes if o.job.endpoint_id is not None})
        # Locked in id order: concurrent recorders (other replicas) cannot deadlock.
        endpoints = {
            e.id: e for e in await session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids))
                .order_by(WebhookEndpoint.id).with_for_update()
            )
        }
        recovered: set[str] = set()
        s = self.settings
        for outcome in outcomes:
            endpoint = endpoints.get(outcome.job.endpoint_id or "")
            if endpoint is None:
                continue
            if outcome.ok:
                if endpoint.consecutive_failures == 0 and endpoint.failing_since is None:
                    continue
                if endpoint.failing_since is not None:
                    log.info("webhook endpoint %s recovered", endpoint.id)
                    recovered.add(endpoint.id)
                endpoint.consecutive_failures = 0
                endpoint.first_failure_at = endpoint.failing_since = endpoint.backoff_until = None
                continue
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
                log.warning("webhook endpoint %s is failing; backing off until %s", endpoint.id,
                            events.iso(health.backoff_until))
                recovered.discard(endpoint.id)
            endpoint.consecutive_failures = health.consecutive_failures
            endpoint.first_failure_at = health.first_failure_at
            endpoint.failing_since = health.failing_since
            endpoint.backoff_until = health.backoff_until
        for endpoint_id in recovered:
            if endpoints[endpoint_id].failing_since is not None:
                continue
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
