"""Per-list blocklists: recipients who left a list (EmailEngine's /v1/blocklist/{listId}).

Separate from the transactional suppression list on purpose: a recipient who
unsubscribes from a newsletter still gets password resets.  A mail merge with a
``listId`` skips the list's blocked recipients (``skipped{reason, listId}``).
Addresses are compared lower-cased, as suppressions are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common.db.models import BlocklistEntry
from mailgate_common.suppression import normalize

# EmailEngine requires a list id in host name form ("newsletter.example.com",
# "weekly"): it becomes part of the List-ID header.
LIST_ID_MAX = 253
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LIST_ID = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def is_list_id(value: str) -> bool:
    """Whether ``value`` is a list id EmailEngine accepts (a host name)."""
    return len(value) <= LIST_ID_MAX and _LIST_ID.fullmatch(value) is not None


async def has(session: AsyncSession, list_id: str, address: str) -> bool:
    """Whether ``address`` is blocked on ``list_id``."""
    return bool(await blocked(session, list_id, [address]))


async def exists(session: AsyncSession, list_id: str) -> bool:
    """Whether the list has any entry (lists exist only through their entries, as in EmailEngine)."""
    found = await session.scalar(select(BlocklistEntry.list_id).where(BlocklistEntry.list_id == list_id).limit(1))
    return found is not None


@dataclass(frozen=True)
class Entry:
    list_id: str
    address: str
    account: str | None
    message_id: str | None
    source: str
    reason: str
    remote_address: str | None
    user_agent: str | None
    created: datetime


def _entry(row: BlocklistEntry) -> Entry:
    return Entry(row.list_id, row.address, row.account_id, row.message_id, row.source, row.reason,
                 row.remote_address, row.user_agent, row.created_at)


async def blocked(session: AsyncSession, list_id: str, addresses: Iterable[str]) -> dict[str, str]:
    """{address as given: reason} for each address blocked on ``list_id``."""
    wanted = list(addresses)
    if not wanted:
        return {}
    rows = await session.execute(
        select(BlocklistEntry.address, BlocklistEntry.reason).where(
            BlocklistEntry.list_id == list_id, BlocklistEntry.address.in_({normalize(a) for a in wanted})
        )
    )
    found = {address: reason for address, reason in rows}
    return {given: found[key] for given in wanted if (key := normalize(given)) in found}


async def add(
    session: AsyncSession,
    list_id: str,
    address: str,
    *,
    account: str | None,
    reason: str = "block",
    source: str = "api",
    message_id: str | None = None,
    remote_address: str | None = None,
    user_agent: str | None = None,
) -> bool:
    """Block ``address`` on the list; False if it already was (the first entry is kept)."""
    stmt = (
        insert(BlocklistEntry)
        .values(list_id=list_id, address=normalize(address), account_id=account, reason=reason,
                source=source, message_id=message_id, remote_address=remote_address, user_agent=user_agent)
        .on_conflict_do_nothing(index_elements=["list_id", "address"])
        .returning(BlocklistEntry.address)
    )
    return (await session.execute(stmt)).first() is not None


async def remove(session: AsyncSession, list_id: str, address: str) -> bool:
    """Unblock ``address``; False if it was not blocked."""
    result = await session.execute(
        delete(BlocklistEntry)
        .where(BlocklistEntry.list_id == list_id, BlocklistEntry.address == normalize(address))
        .returning(BlocklistEntry.address)
    )
    return result.first() is not None


async def lists(session: AsyncSession, offset: int = 0, limit: int = 20) -> tuple[list[tuple[str, int]], int]:
    """([(list id, blocked count)] by list id, number of lists)."""
    total = await session.scalar(select(func.count(func.distinct(BlocklistEntry.list_id))))
    rows = await session.execute(
        select(BlocklistEntry.list_id, func.count())
        .group_by(BlocklistEntry.list_id)
        .order_by(BlocklistEntry.list_id)
        .offset(offset)
        .limit(limit)
    )
    return [(list_id, int(count)) for list_id, count in rows], int(total or 0)


async def entries(session: AsyncSession, list_id: str, offset: int = 0, limit: int = 20) -> tuple[list[Entry], int]:
    """(the list's entries newest first, their number)."""
    scope = BlocklistEntry.list_id == list_id
    total = await session.scalar(select(func.count()).select_from(BlocklistEntry).where(scope))
    rows = await session.scalars(
        select(BlocklistEntry).where(scope)
        .order_by(BlocklistEntry.created_at.desc(), BlocklistEntry.address)
        .offset(offset).limit(limit)
    )
    return [_entry(r) for r in rows], int(total or 0)
