"""Periodic upkeep of the delivery log: expiry of spent retries and retention.

Safe to run on every replica at once: both statements are idempotent and
work in small batches, so they never hold long locks.
"""

from __future__ import annotations

import asyncio
import logging

from mailgate_common.db import Database
from mailgate_common.settings import Settings
from mailgate_webhooks import store

log = logging.getLogger(__name__)

BATCH = 5000
INTERVAL = 600.0


async def run_once(settings: Settings, db: Database) -> tuple[int, int]:
    """(expired, pruned) row counts."""
    expired = pruned = 0
    async with store.connection(db) as conn:
        while (count := await store.expire_spent(conn, settings.webhook_retry_window, BATCH)) > 0:
            expired += count
            if count < BATCH:
                break
        retention = settings.webhook_retention_days * 86400
        while (count := await store.prune_finished(conn, retention, BATCH)) > 0:
            pruned += count
            if count < BATCH:
                break
    if expired or pruned:
        log.info("webhook log upkeep: %d expired, %d pruned", expired, pruned)
    return expired, pruned


async def keep(settings: Settings, db: Database) -> None:
    """Run the upkeep every INTERVAL seconds, for ever (on every replica)."""
    while True:
        try:
            await run_once(settings, db)
        except Exception as exc:
            log.warning("webhook log upkeep failed: %r", exc)
        await asyncio.sleep(INTERVAL)
