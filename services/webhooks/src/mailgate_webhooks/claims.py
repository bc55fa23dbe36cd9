"""Claiming stored deliveries for an attempt, as jobs ready to POST."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence

from mailgate_common import service_settings
from mailgate_common.db import Database
from mailgate_webhooks import store
from mailgate_webhooks.jobs import Job, TraceContexts
from mailgate_webhooks.targets import Targets

log = logging.getLogger(__name__)

# How long a claim lasts: a claimed delivery must start its POST within
# START_WITHIN seconds (the scheduler leaves a later one to lapse), the POST
# takes at most webhook_timeout, and RECORD_MARGIN covers writing its result
# while the claim still keeps every other replica away.
START_WITHIN = 4.0
RECORD_MARGIN = 1.0


def claim_hold(webhook_timeout: float) -> float:
    return START_WITHIN + webhook_timeout + RECORD_MARGIN


def new_claim_token() -> str:
    return secrets.token_hex(8)


async def create_service_secret(db: Database) -> str:
    """The service signing secret, created on first use (first writer wins across replicas)."""
    async with db.transaction() as session:
        return await service_settings.service_secret(session)


class Claims:
    """``hold_back``: while it answers True, nothing is claimed (this replica's
    results are waiting for the database; see recorder.py)."""

    def __init__(self, db: Database, targets: Targets, contexts: TraceContexts, *, hold: float,
                 per_destination: int, hold_back: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.hold_back = hold_back
        self.targets = targets
        self.contexts = contexts
        self.hold = hold
        self.per_destination = per_destination
        self.clock = clock

    async def claim_for(self, dest: str, n: int) -> list[Job]:
        if self.hold_back():
            return []
        token = new_claim_token()
        is_endpoint = not dest.startswith(("http://", "https://"))
        async with store.lazy_transaction(self.db) as conn:
            rows = await store.claim_for(conn, dest, is_endpoint, n, token, self.hold)
        return await self._jobs(rows, token)

    async def claim_due(self, limit: int) -> list[Job]:
        if self.hold_back():
            return []
        token = new_claim_token()
        async with store.lazy_transaction(self.db) as conn:
            due = await store.claim_due(conn, limit, self.per_destination, token, self.hold)
        for endpoint_id in due.probing:
            log.info("probing failing webhook endpoint %s", endpoint_id)
        return await self._jobs(due.deliveries, token)

    async def release(self, jobs: Sequence[Job]) -> None:
        by_token: dict[str, list[int]] = {}
        for job in jobs:
            by_token.setdefault(job.claim_token, []).append(job.delivery_id)
        async with store.lazy_transaction(self.db) as conn:
            for token, ids in by_token.items():
                await store.release(conn, ids, token)

    async def _jobs(self, rows: Sequence[store.ClaimedDelivery], token: str) -> list[Job]:
        claimed_at = self.clock()
        jobs: list[Job] = []
        for row in rows:
            if row.endpoint_id is None:
                secret = row.service_secret or await create_service_secret(self.db)
                target = Targets.for_url(row.url, secret)
            elif not row.endpoint_found or row.secret is None:
                continue  # deleted meanwhile (its deliveries go with it)
            else:
                target = self.targets.for_endpoint(row.url, row.headers, row.secret, row.previous_secret,
                                                   row.endpoint_id)
            jobs.append(Job(
                delivery_id=row.id, claim_token=token, endpoint_id=row.endpoint_id, event_id=row.event_id,
                event=row.event, payload=row.payload, attempts_made=row.attempts_made,
                retry_from=row.retry_from, target=target, claimed_at=claimed_at,
                context=self.contexts.take(row.id),
            ))
        return jobs
