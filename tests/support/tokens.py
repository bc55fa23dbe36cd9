"""Test helpers that write straight to the stack's database (tokens, runtime settings)."""

from __future__ import annotations

import asyncio
from typing import Any

from mailgate_common import service_settings, tokens
from mailgate_common.db import Database


async def _create_token(database_url: str, account: str | None, scopes: list[str],
                        description: str | None) -> str:
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as session:
            return await tokens.create(session, account, scopes, description)
    finally:
        await db.dispose()


def create_token(database_url: str, account: str | None, scopes: list[str],
                 description: str | None = "test") -> str:
    """A new API token in clear (what `mailgate token create` prints)."""
    return asyncio.run(_create_token(database_url, account, scopes, description))


async def _write_settings(database_url: str, values: dict[str, Any]) -> None:
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as session:
            await service_settings.write(session, values)
    finally:
        await db.dispose()


def write_settings(database_url: str, values: dict[str, Any]) -> None:
    asyncio.run(_write_settings(database_url, values))
