"""Bringing the PostgreSQL index of one folder in line with the server.

One sync compares the server's UIDs and flags with the index and, in one
transaction, inserts new messages, deletes expunged ones, updates changed
flags and stages the matching events.  The first sync of a folder, and the
resync after a UIDVALIDITY change, index silently: existing mail is not "new".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import IndexedMessage, Mailbox
from mailgate_common.event_relay import stage
from mailgate_imap_sync import parse

# Session flags that say nothing about the message itself.
IGNORED_FLAGS = {"\\Recent"}


@dataclass
class FolderState:
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    flags: dict[int, list[str]]  # uid -> flags, as the server has them now


def clean_flags(flags: list[str]) -> list[str]:
    return sorted(f for f in flags if f not in IGNORED_FLAGS)


def _event_fields(row: IndexedMessage, special_use: str | None) -> dict[str, Any]:
    return {
        "account": row.account_id,
        "path": row.path,
        "message": row.id,
        "uid": row.uid,
        "message_id": row.message_id,
        "subject": row.subject,
        "from_": row.from_addr,
        "to": row.to_addr or [],
        "cc": row.cc_addr or [],
        "date": row.date,
        "flags": list(row.flags),
        "size": row.size,
        "in_reply_to": row.in_reply_to,
        "special_use": special_use,
    }


class FolderIndex:
    def __init__(self, db: Database, account: str, path: str, special_use: str | None = None) -> None:
        self.db = db
        self.account = account
        self.path = path
        self.special_use = special_use

    async def stored(self) -> Mailbox | None:
        async with self.db.sessions() as session:
            return await session.get(Mailbox, (self.account, self.path))

    async def known(self, uidvalidity: int) -> tuple[bool, dict[int, tuple[str, list[str]]]]:
        """Whether the folder was indexed under this UIDVALIDITY before, and its rows."""
        async with self.db.sessions() as session:
            mailbox = await session.get(Mailbox, (self.account, self.path))
            rows = await session.execute(
                select(IndexedMessage.uid, IndexedMessage.id, IndexedMessage.flags).where(
                    IndexedMessage.account_id == self.account,
                    IndexedMessage.path == self.path,
                    IndexedMessage.uidvalidity == uidvalidity,
                )
            )
            index = {uid: (mid, list(flags)) for uid, mid, flags in rows}
        seen = mailbox is not None and mailbox.uidvalidity == uidvalidity
        return seen, index

    async def apply(
        self,
        state: FolderState,
        index: dict[int, tuple[str, list[str]]],
        fetched: list[parse.FetchedMessage],
        announce: bool,
    ) -> list[events.Event]:
        """Write the differences; returns the staged events (publish after commit)."""
        staged: list[events.Event] = []
        async with self.db.transaction() as session:
            # Folder row first: it also serialises two writers of the same folder.
            await session.execute(
                insert(Mailbox)
                .values(account_id=self.account, path=self.path, special_use=self.special_use,
                        uidvalidity=state.uidvalidity, uidnext=state.uidnext,
                        highestmodseq=state.highestmodseq, messages=len(state.flags),
                        synced_at=events.utcnow())
                .on_conflict_do_update(
                    index_elements=["account_id", "path"],
                    set_={"uidvalidity": state.uidvalidity, "uidnext": state.uidnext,
                          "highestmodseq": state.highestmodseq, "messages": len(state.flags),
                          "synced_at": events.utcnow(), "special_use": self.special_use},
                )
            )
            # Rows of an older UIDVALIDITY are a different mailbox generation: drop them.
            await session.execute(
                delete(IndexedMessage).where(
                    IndexedMessage.account_id == self.account,
                    IndexedMessage.path == self.path,
                    IndexedMessage.uidvalidity != state.uidvalidity,
                )
            )
            for item in fetched:
                row = IndexedMessage(
                    id=parse.message_id(self.account, self.path, state.uidvalidity, item.uid),
                    account_id=self.account,
                    path=self.path,
                    uidvalidity=state.uidvalidity,
                    uid=item.uid,
                    flags=clean_flags(item.flags),
                    size=item.size,
                    internal_date=item.internal_date,
                    **parse.envelope(item.header),
                )
                values = {c.key: getattr(row, c.key) for c in IndexedMessage.__table__.columns
                          if c.key != "created_at"}
                inserted = await session.scalar(
                    insert(IndexedMessage).values(**values)
                    .on_conflict_do_nothing().returning(IndexedMessage.id)
                )
                if inserted and announce:
                    staged.append(events.MessageNew(**_event_fields(row, self.special_use)))
            gone = [uid for uid in index if uid not in state.flags]
            if gone:
                removed = await session.execute(
                    delete(IndexedMessage)
                    .where(IndexedMessage.account_id == self.account,
                           IndexedMessage.path == self.path,
                           IndexedMessage.uidvalidity == state.uidvalidity,
                           IndexedMessage.uid.in_(gone))
                    .returning(IndexedMessage.id, IndexedMessage.uid, IndexedMessage.message_id)
                )
                for mid, uid, header_id in removed:
                    staged.append(events.MessageDeleted(account=self.account, path=self.path,
                                                        message=mid, uid=uid, message_id=header_id))
            for uid, flags in state.flags.items():
                if uid not in index:
                    continue
                old = set(index[uid][1])
                new = set(clean_flags(flags))
                if old == new:
                    continue
                existing = await session.get(IndexedMessage, index[uid][0])
                if existing is None:
                    continue
                existing.flags = sorted(new)
                staged.append(events.MessageUpdated(
                    **_event_fields(existing, self.special_use),
                    added=sorted(new - old), removed=sorted(old - new),
                ))
            stage(session, *staged)
        return staged
