"""A dedicated PostgreSQL connection for one of the sender's hot loops.

The claim loop and the outcome writer each issue one statement at a time, many
times a second: a connection of their own spares them the pool and the ORM
(most of a delivery's CPU went there), and lets each carry its own commit
semantics (claims do not wait for the disk; outcomes do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.engine import make_url

from mailgate_common.db.session import CONNECTION_ERRORS


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL the services share, as a libpq-style DSN for asyncpg."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class DirectConnection:
    """One lazily (re)connected asyncpg connection, used by one task at a time."""

    def __init__(self, database_url: str, *, durable: bool = True) -> None:
        self._dsn = asyncpg_dsn(database_url)
        # synchronous_commit=off for writes whose loss in a database crash is
        # harmless (a claim that lapses and is taken again).
        self._settings = {} if durable else {"synchronous_commit": "off"}
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=5, command_timeout=30, server_settings=self._settings
        )
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        return conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._connect()
            try:
                yield self._conn
            except CONNECTION_ERRORS:
                # Broken (database restarted, network): connect afresh next time.
                self._conn.terminate()
                self._conn = None
                raise

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
        self._conn = None
