"""Retention: what mailgate keeps, and for how long.

Without it the database only grows: every message's raw MIME stays forever
(86 GB a day at 1,000 msg/s of 1 KB), with its attempts, rate windows and
bounces.  The services prune their own tables in small batches
(``SKIP LOCKED``, one short transaction each), so every replica may run the
jobs at once without holding long locks:

* sender: the body of a finished message after ``outbox_body_retention_days``
  (its row, attempts and timeline stay), the finished message itself after
  ``outbox_retention_days``, and rate windows that ended a day ago;
* imap-sync: bounce and complaint records after ``bounce_retention_days``
  (the suppressions they caused stay until removed);
* webhooks: its delivery log (``webhook_retention_days``, see its maintenance);
* smtp-ingress (the MX door): received messages (``inbound_messages``, their raw
  MIME is most of the row) after ``inbound_retention_days``; held messages stay
  until deleted or released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from mailgate_common.db import Database
from mailgate_common.settings import Settings

log = logging.getLogger(__name__)

BATCH = 2000
INTERVAL = 600.0

_FINAL = "('sent', 'failed', 'cancelled', 'unknown')"

DROP_BODIES_SQL = text(
    f"""
    UPDATE outbox SET raw = NULL
    WHERE id IN (
        SELECT id FROM outbox
        WHERE finished_at < now() - make_interval(secs => :age) AND state IN {_FINAL} AND raw IS NOT NULL
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)
# Attempts go with their message (ON DELETE CASCADE); bounces keep their record, unlinked.
DROP_MESSAGES_SQL = text(
    f"""
    DELETE FROM outbox
    WHERE id IN (
        SELECT id FROM outbox
        WHERE finished_at < now() - make_interval(secs => :age) AND state IN {_FINAL}
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)
# A day window is the longest: anything that started two days ago has ended.
DROP_WINDOWS_SQL = text(
    """
    DELETE FROM send_windows
    WHERE ctid IN (
        SELECT ctid FROM send_windows WHERE starts_at < now() - interval '2 days'
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)
DROP_BOUNCES_SQL = text(
    """
    DELETE FROM bounces
    WHERE id IN (
        SELECT id FROM bounces WHERE created_at < now() - make_interval(secs => :age)
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)

# Held messages wait for a person (GET / release / DELETE), whatever their age.
DROP_INBOUND_SQL = text(
    """
    DELETE FROM inbound_messages
    WHERE id IN (
        SELECT id FROM inbound_messages
        WHERE received_at < now() - make_interval(secs => :age) AND NOT held
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
)

DAY = 86400.0


async def _in_batches(db: Database, sql: object, **params: object) -> int:
    total = 0
    while True:
        async with db.transaction() as session:
            count: int = (await session.execute(sql, {**params, "batch": BATCH})).rowcount  # type: ignore[call-overload]
        total += count
        if count < BATCH:
            return total


async def prune_outbox(db: Database, settings: Settings) -> dict[str, int]:
    done = {
        "bodies": await _in_batches(db, DROP_BODIES_SQL, age=settings.outbox_body_retention_days * DAY),
        "messages": await _in_batches(db, DROP_MESSAGES_SQL, age=settings.outbox_retention_days * DAY),
        "windows": await _in_batches(db, DROP_WINDOWS_SQL),
    }
    if any(done.values()):
        log.info("outbox retention: %s", ", ".join(f"{n} {what}" for what, n in done.items()))
    return done


async def prune_bounces(db: Database, settings: Settings) -> dict[str, int]:
    done = {"bounces": await _in_batches(db, DROP_BOUNCES_SQL, age=settings.bounce_retention_days * DAY)}
    if done["bounces"]:
        log.info("bounce retention: %d bounces", done["bounces"])
    return done


async def prune_inbound(db: Database, settings: Settings) -> dict[str, int]:
    done = {"inbound": await _in_batches(db, DROP_INBOUND_SQL, age=settings.inbound_retention_days * DAY)}
    if done["inbound"]:
        log.info("inbound retention: %d received messages", done["inbound"])
    return done


async def run_periodically(job: Callable[[], Awaitable[object]], interval: float = INTERVAL) -> None:
    """Run ``job`` now and every ``interval`` seconds; a failure waits for the next round."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention job failed (next try in %.0f s): %r", interval, exc)
        await asyncio.sleep(interval)
