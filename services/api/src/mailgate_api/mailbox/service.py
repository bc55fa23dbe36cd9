"""Mailbox listings, answered from imap-sync's index (never from IMAP directly)."""

from __future__ import annotations

from sqlalchemy import BigInteger, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import not_found
from mailgate_api.mailbox.schemas import MailboxEntry, MessageEntry
from mailgate_common import events
from mailgate_common.db.models import Account, IndexedMessage, Mailbox


async def require_account(session: AsyncSession, account: str) -> None:
    if await session.get(Account, account) is None:
        raise not_found("Account", "account")


async def mailboxes(session: AsyncSession, account: str) -> list[MailboxEntry]:
    await require_account(session, account)
    rows = await session.scalars(select(Mailbox).where(Mailbox.account_id == account))
    out = []
    for row in rows:
        name = row.path.rsplit(row.delimiter, 1)[-1] if row.delimiter else row.path
        out.append(MailboxEntry(
            path=row.path, name=name, delimiter=row.delimiter,
            special_use="\\Inbox" if row.path == "INBOX" else row.special_use,
            messages=row.messages if row.synced_at else None,
            uid_next=row.uidnext,
            uid_validity=str(row.uidvalidity) if row.uidvalidity is not None else None,
            synced=row.synced_at is not None,
        ))
    # INBOX first, then by path, as mail clients show them.
    return sorted(out, key=lambda m: (m.path != "INBOX", m.path.lower()))


def entry(row: IndexedMessage) -> MessageEntry:
    return MessageEntry(
        id=row.id, uid=row.uid, path=row.path, message_id=row.message_id,
        subject=row.subject, from_=row.from_addr, to=row.to_addr or [], cc=row.cc_addr or [],
        date=events.iso(row.date), internal_date=events.iso(row.internal_date),
        flags=list(row.flags), unseen="\\Seen" not in row.flags,
        flagged="\\Flagged" in row.flags, answered="\\Answered" in row.flags,
        size=row.size, in_reply_to=row.in_reply_to,
    )


async def messages(
    session: AsyncSession, account: str, path: str, page: int, page_size: int
) -> tuple[list[MessageEntry], int]:
    await require_account(session, account)
    where = (IndexedMessage.account_id == account, IndexedMessage.path == path)
    total = await session.scalar(select(func.count()).select_from(IndexedMessage).where(*where)) or 0
    # Newest first by UID: served by the (account, path, uid DESC) index.
    rows = await session.scalars(
        select(IndexedMessage).where(*where).order_by(IndexedMessage.uid.desc())
        .offset(page * page_size).limit(page_size)
    )
    return [entry(r) for r in rows], total


async def found(session: AsyncSession, account: str, path: str, uidvalidity: int | None, uids: list[int],
                page: int, page_size: int) -> tuple[list[MessageEntry], int]:
    """A search's matches as listing entries, newest first: those the index holds."""
    if not uids or uidvalidity is None:
        return [], 0
    where = (IndexedMessage.account_id == account, IndexedMessage.path == path,
             IndexedMessage.uidvalidity == uidvalidity, IndexedMessage.uid == any_(literal(uids, ARRAY(BigInteger))))
    total = await session.scalar(select(func.count()).select_from(IndexedMessage).where(*where)) or 0
    rows = await session.scalars(
        select(IndexedMessage).where(*where).order_by(IndexedMessage.uid.desc())
        .offset(page * page_size).limit(page_size)
    )
    return [entry(r) for r in rows], total
