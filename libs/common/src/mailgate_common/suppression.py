"""The suppression list: addresses mailgate refuses to send to.

An entry belongs to one account, or (account_id None) to every account.  Hard
bounces and complaints add entries; people add and remove them through the API.
Every door that accepts mail asks ``suppressed()`` (or ``Lookups``) before queueing: REST submit
answers 422 (or drops the recipients), SMTP answers ``550 5.7.1`` at RCPT.

Addresses are compared lower-cased: mailbox local parts are case-sensitive in
theory, but no real server treats them so, and a list that misses "Bob@x" after
"bob@x" bounced would be worse than useless.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common.batching import Batcher
from mailgate_common.db import Database
from mailgate_common.db.models import Suppression
from mailgate_common.db.session import CONNECTION_ERRORS

Source = Literal["bounce", "complaint", "manual"]
SOURCES: tuple[Source, ...] = ("bounce", "complaint", "manual")
# The reply an SMTP door gives at RCPT for a suppressed recipient (RFC 3463 5.7.1:
# delivery not authorized, message refused).
SMTP_REPLY_CODE = 550
SMTP_STATUS = "5.7.1"


@dataclass(frozen=True)
class Entry:
    account: str | None  # None: global
    address: str
    reason: str
    source: str
    details: dict[str, Any] | None
    created: datetime | None


def normalize(address: str) -> str:
    """The form addresses are stored and compared in."""
    return address.strip().strip("<>").strip().lower()


def _entry(row: Suppression) -> Entry:
    return Entry(row.account_id, row.address, row.reason, row.source, row.details, row.created_at)


_SUPPRESSED = """
SELECT address, reason, account_id FROM suppressions
WHERE address = ANY($1::text[]) AND (account_id IS NULL OR account_id = $2::text)
"""
_SUPPRESSED_ANY_ACCOUNT = "SELECT address, reason, account_id FROM suppressions WHERE address = ANY($1::text[])"


async def suppressed(db: Database, account_id: str | None, addresses: Iterable[str]) -> dict[str, str]:
    """{address as given: reason} for each address suppressed for this account or globally.

    An account's own entry wins over a global one (its reason is the more specific).
    """
    wanted = builtins.list(addresses)
    if not wanted:
        return {}
    async with db.statement_connection() as conn:
        rows = await conn.fetch(_SUPPRESSED, builtins.list({normalize(a) for a in wanted}), account_id)
    return _matches(rows, account_id, wanted)


class Lookups:
    """``suppressed()`` for many concurrent callers in one query each round: SMTP
    asks at every RCPT, and under load the round trip is most of the cost."""

    def __init__(self, db: Database, max_batch: int = 200) -> None:
        self.db = db
        self._batches: Batcher[tuple[str | None, builtins.list[str]], dict[str, str]] = Batcher(
            "suppression lookups", self._lookup_many, max_batch, unsplittable=CONNECTION_ERRORS
        )

    async def suppressed(self, account_id: str | None, addresses: Iterable[str]) -> dict[str, str]:
        """As the module's ``suppressed()``."""
        wanted = builtins.list(addresses)
        return await self._batches.submit((account_id, wanted)) if wanted else {}

    async def _lookup_many(
        self, asks: builtins.list[tuple[str | None, builtins.list[str]]]
    ) -> builtins.list[dict[str, str]]:
        keys = {normalize(address) for _, addresses in asks for address in addresses}
        async with self.db.statement_connection() as conn:
            rows = await conn.fetch(_SUPPRESSED_ANY_ACCOUNT, builtins.list(keys))
        return [_matches(rows, account_id, addresses) for account_id, addresses in asks]


def _matches(rows: Iterable[Any], account_id: str | None, addresses: builtins.list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    # Account rows sort last and overwrite global ones; other accounts' rows don't count.
    for row in sorted(rows, key=lambda r: r["account_id"] is not None):
        if row["account_id"] is None or row["account_id"] == account_id:
            found[row["address"]] = row["reason"]
    return {given: found[key] for given in addresses if (key := normalize(given)) in found}


async def add(
    session: AsyncSession,
    account_id: str | None,
    address: str,
    reason: str,
    source: Source = "manual",
    details: Mapping[str, Any] | None = None,
) -> Entry:
    """Add or refresh an entry; the newest reason and details replace older ones."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    values: dict[str, Any] = {
        "account_id": account_id,
        "address": normalize(address),
        "reason": reason,
        "source": source,
        "details": dict(details) if details is not None else None,
    }
    stmt = (
        insert(Suppression)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["account_id", "address"] if account_id is not None else ["address"],
            index_where=Suppression.account_id.isnot(None)
            if account_id is not None
            else Suppression.account_id.is_(None),
            set_={"reason": reason, "source": source, "details": values["details"]},
        )
        .returning(Suppression)
    )
    row = (await session.execute(stmt)).scalar_one()
    return _entry(row)


async def remove(session: AsyncSession, account_id: str | None, address: str) -> bool:
    """Delete one entry (the global one when account_id is None); False if there was none."""
    scope = Suppression.account_id.is_(None) if account_id is None else Suppression.account_id == account_id
    result = await session.execute(
        delete(Suppression).where(scope, Suppression.address == normalize(address)).returning(Suppression.id)
    )
    return result.first() is not None


async def list_entries(
    session: AsyncSession, account_id: str | None, offset: int = 0, limit: int = 100
) -> tuple[builtins.list[Entry], int]:
    """(entries newest first, total) of one account's list, or of the global list."""
    scope = Suppression.account_id.is_(None) if account_id is None else Suppression.account_id == account_id
    total = (await session.execute(select(func.count()).select_from(Suppression).where(scope))).scalar_one()
    rows = await session.scalars(
        select(Suppression)
        .where(scope)
        .order_by(Suppression.created_at.desc(), Suppression.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [_entry(r) for r in rows], int(total)


# The verb set the other doors use: suppressed / add / remove / list.
list = list_entries


def bounce_reason(reason: str, status: str | None, hard: bool) -> str:
    """How a bounce is described on the list: 'hard bounce: userunknown (5.1.1)'."""
    kind = "hard bounce" if hard else "soft bounce"
    text = f"{kind}: {reason or 'undefined'}"
    return f"{text} ({status})" if status else text


def smtp_reply(address: str, reason: str) -> tuple[int, str]:
    """(code, text) an SMTP door answers at RCPT TO for a suppressed recipient."""
    return SMTP_REPLY_CODE, f"{SMTP_STATUS} <{address}>: recipient is on the suppression list ({reason})"
