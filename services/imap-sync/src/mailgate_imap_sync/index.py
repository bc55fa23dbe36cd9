"""The PostgreSQL index of one folder: read a part of it, write a batch of changes.

A sync (see ``sync.py``) never loads a whole folder: it reads the rows of one
UID range (a chunk of a full comparison) or of a few UIDs (new mail, changed
flags), and writes each chunk's differences in one transaction with the
matching events.  The folder row (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, count,
``synced_at``) is written when a sync completes: a folder is "synced" only
once every batch of its first sync is in, and until then nothing is announced,
so a first sync cut short resumes silently.

One message PostgreSQL refuses must not block the rest: the batch insert runs
in a savepoint, and if it fails the batch is inserted row by row (each in its
own savepoint) and the refused row is skipped and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import IndexedMessage, Mailbox
from mailgate_common.event_relay import stage
from mailgate_imap_sync import parse

log = logging.getLogger(__name__)

# Session flags that say nothing about the message itself.
IGNORED_FLAGS = {"\\Recent"}
# What PostgreSQL refuses about one row's values (an encoding, a length, a number).
_ROW_REFUSED = (sqlalchemy.exc.DataError, sqlalchemy.exc.IntegrityError)


def clean_flags(flags: Iterable[str]) -> list[str]:
    return sorted(set(flags) - IGNORED_FLAGS)


@dataclass
class FolderState:
    """What a completed sync records about the folder."""

    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    messages: int


@dataclass
class Batch:
    """One transaction's worth of differences between the server and the index."""

    uidvalidity: int
    new: list[parse.FetchedMessage] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    # uid -> (message id, flags as indexed, flags on the server)
    changed: dict[int, tuple[str, list[str], list[str]]] = field(default_factory=dict)
    # uid -> messageNew content fields of announced mail (see details.py)
    details: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.new or self.gone or self.changed)


Known = dict[int, tuple[str, list[str]]]  # uid -> (message id, flags)


def compare(batch: Batch, known: Known, server: dict[int, list[str]], gone_candidates: Iterable[int] = ()) -> list[int]:
    """Add the differences of ``server`` (uid -> flags) against ``known`` to ``batch``;
    ``gone_candidates``: indexed UIDs the server no longer has.  Returns the UIDs
    the index lacks (their headers are still to be fetched)."""
    batch.gone.extend(gone_candidates)
    missing: list[int] = []
    for uid, flags in server.items():
        row = known.get(uid)
        if row is None:
            missing.append(uid)
        elif set(row[1]) != set(clean_flags(flags)):
            batch.changed[uid] = (row[0], row[1], clean_flags(flags))
    return missing


def _event_fields(row: dict[str, Any], special_use: str | None) -> dict[str, Any]:
    return {
        "account": row["account_id"],
        "path": row["path"],
        "message": row["id"],
        "uid": row["uid"],
        "message_id": row["message_id"],
        "subject": row["subject"],
        "from_": row["from_addr"],
        "to": row["to_addr"] or [],
        "cc": row["cc_addr"] or [],
        "date": row["date"],
        "flags": list(row["flags"]),
        "size": row["size"],
        "in_reply_to": row["in_reply_to"],
        "special_use": special_use,
    }


_COLUMNS = [c.key for c in IndexedMessage.__table__.columns if c.key != "created_at"]
# What the headers give (see parse.envelope).
_ENVELOPE = ("message_id", "subject", "from_addr", "to_addr", "cc_addr", "date", "in_reply_to", "references")


async def stored_mailboxes(db: Database, account: str, paths: list[str]) -> dict[str, Mailbox]:
    """The index's state of these folders of an account, by path (one query)."""
    async with db.sessions() as session:
        rows = await session.scalars(select(Mailbox).where(Mailbox.account_id == account, Mailbox.path.in_(paths)))
        return {row.path: row for row in rows}


class FolderIndex:
    def __init__(self, db: Database, account: str, path: str, special_use: str | None = None) -> None:
        self.db = db
        self.account = account
        self.path = path
        self.special_use = special_use

    def _where(self, uidvalidity: int) -> tuple[Any, ...]:
        return (IndexedMessage.account_id == self.account, IndexedMessage.path == self.path,
                IndexedMessage.uidvalidity == uidvalidity)

    async def stored(self) -> Mailbox | None:
        async with self.db.sessions() as session:
            return await session.get(Mailbox, (self.account, self.path))

    async def known(self, uidvalidity: int, low: int, high: int | None) -> Known:
        """Indexed rows with ``low <= uid`` (and ``uid <= high`` unless None)."""
        where = [*self._where(uidvalidity), IndexedMessage.uid >= low]
        if high is not None:
            where.append(IndexedMessage.uid <= high)
        return await self._known(where)

    async def known_uids(self, uidvalidity: int, uids: Sequence[int]) -> Known:
        return await self._known([*self._where(uidvalidity), IndexedMessage.uid.in_(list(uids))]) if uids else {}

    async def _known(self, where: list[Any]) -> Known:
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(IndexedMessage.uid, IndexedMessage.id, IndexedMessage.flags).where(*where)
            )
            return {uid: (mid, list(flags)) for uid, mid, flags in rows}

    async def count(self, uidvalidity: int) -> int:
        """Rows indexed under ``uidvalidity`` (counted by PostgreSQL, from its index alone)."""
        async with self.db.sessions() as session:
            return int(await session.scalar(
                select(func.count()).select_from(IndexedMessage).where(*self._where(uidvalidity))) or 0)

    async def forget_other_generations(self, uidvalidity: int) -> None:
        """Rows of another UIDVALIDITY are a different mailbox generation: drop them."""
        async with self.db.transaction() as session:
            await session.execute(
                delete(IndexedMessage).where(IndexedMessage.account_id == self.account,
                                             IndexedMessage.path == self.path,
                                             IndexedMessage.uidvalidity != uidvalidity)
            )

    async def apply(self, batch: Batch, announce: bool, finished: FolderState | None = None) -> list[events.Event]:
        """Write ``batch`` (and, with ``finished``, the folder row) in one transaction;
        returns the staged events (publish after commit)."""
        staged: list[events.Event] = []
        # Decoding headers costs ~0.5 ms a message (the email package): a first sync's
        # chunk of 500 would hold the event loop - every other account's IDLE - for
        # a quarter of a second, and a pooled connection if done in the transaction.
        rows = await asyncio.to_thread(self._rows, batch) if len(batch.new) > 10 else self._rows(batch)
        async with self.db.transaction() as session:
            if finished is not None:
                # Folder row first: it also serialises two writers of the same folder.
                await self._store_folder(session, finished)
            if rows:
                staged += await self._insert(session, rows, announce, batch.details)
            if batch.gone:
                staged += await self._delete(session, batch)
            if batch.changed:
                staged += await self._update_flags(session, batch)
            if not announce:
                staged = []  # a first sync (or its resumption) is silent
            stage(session, *staged)
        return staged

    async def finish(self, state: FolderState) -> None:
        async with self.db.transaction() as session:
            await self._store_folder(session, state)

    async def _store_folder(self, session: AsyncSession, state: FolderState) -> None:
        values = {"uidvalidity": state.uidvalidity, "uidnext": state.uidnext,
                  "highestmodseq": state.highestmodseq, "messages": state.messages,
                  "synced_at": events.utcnow(), "special_use": self.special_use}
        await session.execute(
            insert(Mailbox).values(account_id=self.account, path=self.path, **values)
            .on_conflict_do_update(index_elements=["account_id", "path"], set_=values)
        )

    def _row(self, uidvalidity: int, item: parse.FetchedMessage) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": parse.message_id(self.account, self.path, uidvalidity, item.uid),
            "account_id": self.account, "path": self.path, "uidvalidity": uidvalidity, "uid": item.uid,
            "flags": clean_flags(item.flags), "size": item.size, "internal_date": item.internal_date,
            **dict.fromkeys(_ENVELOPE),
        }
        try:
            row.update(parse.envelope(item.header))
        except Exception:  # headers the email package cannot read at all: listed without them
            log.exception("%s %s: uid %s: unreadable headers", self.account, self.path, item.uid)
        return row

    def _rows(self, batch: Batch) -> list[dict[str, Any]]:
        return [self._row(batch.uidvalidity, item) for item in batch.new]

    async def _insert(self, session: AsyncSession, rows: list[dict[str, Any]], announce: bool,
                      details: dict[int, dict[str, Any]] | None = None) -> list[events.Event]:
        try:
            async with session.begin_nested():
                inserted = await self._insert_rows(session, rows)
        except _ROW_REFUSED as exc:
            # A row PostgreSQL refuses (the batch is rolled back to the savepoint):
            # find it, keep the others.
            log.warning("%s %s: batch of %d refused (%s), inserting one by one",
                        self.account, self.path, len(rows), type(exc.orig).__name__ if exc.orig else exc)
            inserted = set()
            for row in rows:
                inserted |= await self._insert_one(session, row)
        if not announce:
            return []
        extra = details or {}
        return [events.MessageNew(**_event_fields(row, self.special_use), **extra.get(row["uid"], {}))
                for row in rows if row["id"] in inserted]

    async def _insert_one(self, session: AsyncSession, row: dict[str, Any]) -> set[str]:
        """The row; else the row without what its headers said (the message stays listed
        and counted, so the folder is not compared in full on every sync); else nothing."""
        for attempt in (row, {**row, **dict.fromkeys(_ENVELOPE)}):
            try:
                async with session.begin_nested():
                    return await self._insert_rows(session, [attempt])
            except _ROW_REFUSED as exc:
                log.error("%s %s: uid %s%s refused: %s", self.account, self.path, row["uid"],
                          "" if attempt is row else " (without its headers)", exc.orig or exc)
        return set()

    @staticmethod
    async def _insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
        if not rows:
            return set()
        result = await session.execute(
            insert(IndexedMessage).values([{k: row[k] for k in _COLUMNS} for row in rows])
            .on_conflict_do_nothing().returning(IndexedMessage.id)
        )
        return set(result.scalars())

    async def _delete(self, session: AsyncSession, batch: Batch) -> list[events.Event]:
        removed = await session.execute(
            delete(IndexedMessage)
            .where(*self._where(batch.uidvalidity), IndexedMessage.uid.in_(batch.gone))
            .returning(IndexedMessage.id, IndexedMessage.uid, IndexedMessage.message_id)
        )
        return [events.MessageDeleted(account=self.account, path=self.path, message=mid, uid=uid, message_id=header_id,
                                      special_use=self.special_use)
                for mid, uid, header_id in removed]

    async def _update_flags(self, session: AsyncSession, batch: Batch) -> list[events.Event]:
        ids = {mid: uid for uid, (mid, _, _) in batch.changed.items()}
        rows = await session.scalars(select(IndexedMessage).where(IndexedMessage.id.in_(list(ids))))
        staged: list[events.Event] = []
        for row in rows:
            _, _, flags = batch.changed[ids[row.id]]
            # The row as it is now, not as the comparison read it: a concurrent
            # writer (a resync) may already have stored these flags.
            old, new = set(row.flags), set(flags)
            if old == new:
                continue
            row.flags = sorted(new)
            fields = {c: getattr(row, c) for c in _COLUMNS}
            staged.append(events.MessageUpdated(**_event_fields(fields, self.special_use),
                                                added=sorted(new - old), removed=sorted(old - new)))
        return staged
