"""References for REST submit, served by the same stack (uvicorn + litestar + msgspec
decoding of the same body):

* ``/v1/account/{account}/submit`` answers without storing anything: the framework's ceiling;
* ``/durable/v1/account/{account}/submit`` also INSERTs the body and COMMITs with asyncpg:
  the floor of "durable before acknowledged" on this PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, post

from mailgate_common.submission import SubmitRequest

ANSWER = {"response": "Queued for delivery", "messageId": "<x@y>", "sendAt": "", "queueId": "0"}
pool: asyncpg.Pool | None = None


@post("/v1/account/{account:str}/submit", status_code=200)
async def submit(account: str, data: SubmitRequest) -> dict[str, str]:
    return ANSWER


@post("/durable/v1/account/{account:str}/submit", status_code=200)
async def durable_submit(account: str, data: SubmitRequest) -> dict[str, str]:
    assert pool is not None
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO bench_reference (body) VALUES ($1)", msgspec.json.encode(data))
    return ANSWER


@asynccontextmanager
async def lifespan(_: Litestar) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=5, max_size=20)
    async with pool.acquire() as connection, connection.transaction():
        # Every worker runs this; IF NOT EXISTS alone races between them.
        await connection.execute("SELECT pg_advisory_xact_lock(42)")
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_reference (id bigserial primary key, body bytea)")
    yield
    await pool.close()


app = Litestar([submit, durable_submit], lifespan=[lifespan], request_max_body_size=50 * 1024 * 1024)

if __name__ == "__main__":
    # As many worker processes as the API under test, so the comparison is like for like.
    uvicorn.run("bench.reference_app:app", host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop",
                http="httptools", log_level="warning", access_log=False,
                workers=int(os.environ.get("MAILGATE_API_WORKERS", "1")))
