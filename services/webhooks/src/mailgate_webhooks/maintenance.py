"""Periodic upkeep of the delivery log: expiry of spent retries and retention.

Safe to run on every replica at once: both statements are idempotent and
work in small batches, so they never hold long locks.
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from mailgate_common.db import Database
from mailgate_common.settings import Settings

log = logging.getLogger(__name__)

BATCH = 5000
INTERVAL = 600.0

# Deliveries that waited behind a failing endpoint past their retry window are
# never attempted again, so they would otherwise stay "retrying" forever.
EXPIRE_SQL = text(
    """
    UPDATE webhook_deliveries SET state = 'failed',
           last_error = coalesce(last_error || '; ', '') || 'retry window spent'
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state IN ('pending', 'retrying')
          AND retry_from < now() - make_interval(secs => :window)
          AND (claimed_until IS NULL OR claimed_until < now())
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)

# Attempts go with their delivery (ON DELETE CASCADE).
PRUNE_SQL = text(
    """
    DELETE FROM webhook_deliveries
    WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE state IN ('delivered', 'failed')
          AND created_at < now() - make_interval(secs => :retention)
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)


async def run_once(settings: Settings, db: Database) -> tuple[int, int]:
    """(expired, pruned) row counts."""
    expired = pruned = 0
    params = {
        "window": settings.webhook_retry_window,
        "retention": settings.webhook_retention_days * 86400,
        "batch": BATCH,
    }
    for sql, counter in ((EXPIRE_SQL, "expired"), (PRUNE_SQL, "pruned")):
        while True:
            async with db.transaction() as session:
                count = (await session.execute(sql, params)).rowcount  # type: ignore[attr-defined]
            if counter == "expired":
                expired += count
            else:
                pruned += count
            if count < BATCH:
                break
    if expired or pruned:
        log.info("webhook log upkeep: %d expired, %d pruned", expired, pruned)
    return expired, pruned
