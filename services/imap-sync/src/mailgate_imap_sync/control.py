"""reconnect / sync / flush of one account (``imap.account_command``), on the replica watching it.

The command arrives on the shared imap-sync queue, so any replica may get it.
The one watching the account acts at once; any other leaves it in
``Account.extra["imapCommands"]`` (command -> event id) and the holder finds
it in its next lease renewal (``leases.py``, every ``imap_heartbeat``), acts
and clears exactly what it saw.  An account nobody watches yet keeps the mark
until a replica takes it (a fresh watcher syncs everything anyway).

* ``reconnect``: drop the watcher's connection and open a new one;
* ``sync``: sync every watched folder now (ends IDLE early);
* ``flush``: drop the account's index and folder rows, then reconnect: the
  first sync rebuilds it silently, as EmailEngine's flush does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, text

from mailgate_common.db import Database
from mailgate_common.db.models import IndexedMessage, Mailbox

# Strongest first: a flush includes a reconnect, a reconnect includes a sync.
ORDER = ("flush", "reconnect", "sync")
EXTRA_KEY = "imapCommands"

MARK_SQL = text(
    """
    UPDATE accounts SET extra = coalesce(extra, '{}'::jsonb) || jsonb_build_object(
        'imapCommands', coalesce(extra -> 'imapCommands', '{}'::jsonb)
            || jsonb_build_object(CAST(:command AS text), CAST(:id AS text)))
    WHERE id = CAST(:account AS text)
    """
)
CLEAR_SQL = text(
    """
    UPDATE accounts SET extra = extra - 'imapCommands'
    WHERE id = :account AND extra -> 'imapCommands' = CAST(:seen AS jsonb)
    """
)


def strongest(commands: dict[str, Any] | None) -> str | None:
    """The one command to run for everything asked (None: nothing)."""
    return next((c for c in ORDER if commands and c in commands), None)


async def mark(db: Database, account: str, command: str, event_id: str) -> None:
    async with db.transaction() as session:
        await session.execute(MARK_SQL, {"account": account, "command": command, "id": event_id})


async def clear(db: Database, account: str, seen: dict[str, Any]) -> None:
    async with db.transaction() as session:
        await session.execute(CLEAR_SQL, {"account": account, "seen": json.dumps(seen)})


async def flush_index(db: Database, account: str) -> None:
    async with db.transaction() as session:
        await session.execute(delete(IndexedMessage).where(IndexedMessage.account_id == account))
        await session.execute(delete(Mailbox).where(Mailbox.account_id == account))


async def run(command: str, account: str, *, sync_now: Callable[[], None],
              restart: Callable[[Callable[[], Awaitable[None]] | None], Awaitable[None]],
              db: Database) -> None:
    """Carry ``command`` out on the watcher this replica runs for ``account``."""
    if command == "sync":
        sync_now()
    elif command == "reconnect":
        await restart(None)
    elif command == "flush":
        # While no watcher runs: a sync in flight must not write rows back in between.
        async def wipe() -> None:
            await flush_index(db, account)

        await restart(wipe)
