from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# What asyncpg raises when PostgreSQL is away or the connection broke (nothing
# was committed): callers answer "retry later", never "queued".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
    TimeoutError,
)


class Database:
    """One engine per process; sessions are short and scoped to one unit of work."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.engine: AsyncEngine = create_async_engine(
            url,
            # Small pools: every replica of every service holds its own, and
            # PostgreSQL's connection limit is shared by all of them.
            pool_size=pool_size,
            # No overflow: a burst waits for a pooled connection (microseconds)
            # instead of opening and closing connections per request, which cost
            # PostgreSQL a fork and us a handshake each and cut throughput by 4x.
            max_overflow=0,
            pool_timeout=10,
            # No pre-ping: it costs a round trip per checkout (12 % of a submit's CPU).
            # A connection broken by a database restart fails once, is discarded by
            # SQLAlchemy's disconnect detection, and callers retry (API: 503).
            pool_recycle=1800,
            # Fail fast when PostgreSQL is away so callers can answer 503.
            connect_args={"timeout": 5, "command_timeout": 30},
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self, durable: bool = True) -> AsyncIterator[AsyncSession]:
        """A session inside BEGIN ... COMMIT (ROLLBACK on error).

        ``durable=False`` commits without waiting for the WAL to reach disk: only
        for writes whose loss in a database crash is harmless (a claim that
        lapses, a "delivered" mark that leads to one more delivery).
        """
        async with self.sessions() as session, session.begin():
            if not durable:
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            yield session

    @asynccontextmanager
    async def statement_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection outside any transaction, for hot single-statement
        paths: each statement commits on its own in one round trip, prepared once per
        connection.  On this kind of machine a round trip costs more CPU (system calls)
        than anything else a submit does, and a session spends four on one INSERT
        (BEGIN, INSERT, COMMIT, plus its ORM work)."""
        async with self.engine.connect() as conn:
            pooled = await conn.get_raw_connection()
            driver: asyncpg.Connection = pooled.driver_connection
            try:
                yield driver
            except CONNECTION_ERRORS:
                # The pool cannot see past SQLAlchemy; tell it this connection is dead.
                await conn.invalidate()
                raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()
