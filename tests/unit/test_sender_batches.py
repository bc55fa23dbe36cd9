"""The sender's batched claim and outcome statements against a real PostgreSQL and
RabbitMQ: many messages per round trip, and still every guard of the lifecycle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_sender.claims import Claim, Claimer
from mailgate_sender.recorder import Record, Recorder
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def empty_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A migrated database and a vhost of its own, with no service running against them."""
    stack = Stack(Path(tmp_path_factory.mktemp("sender-batches")))
    stack.create()
    try:
        yield stack
    finally:
        stack.destroy()


async def _queue(conn: asyncpg.Connection, account: str, count: int, age: float = 60.0) -> list[str]:
    ids = [f"t{uuid.uuid4().hex[:12]}" for _ in range(count)]
    for queue_id in ids:
        await conn.execute(
            """INSERT INTO outbox (id, account_id, message_id, envelope_from, envelope_to, raw, state,
                                   send_at, next_attempt_at, max_attempts, created_at)
               VALUES ($1, $2, '<m@test>', 'a@test', ARRAY['b@test'], 'raw'::bytea, 'queued',
                       now() - make_interval(secs => $3), now() - make_interval(secs => $3), 3,
                       now() - make_interval(secs => $3))""",
            queue_id, account, age,
        )
    return ids


def _record(claim: Claim, state: str) -> Record:
    sent = state == "sent"
    event: events.Event = (
        events.MessageSent(account=claim.account_id, queue_id=claim.queue_id, message_id=claim.message_id,
                           response="250 ok", envelope=events.Envelope(from_="a@test", to=["b@test"]))
        if sent else
        events.MessageDeliveryError(account=claim.account_id, queue_id=claim.queue_id,
                                    message_id=claim.message_id, envelope=events.Envelope(),
                                    error="451 later", attempts_made=1, attempts=3)
    )
    now = events.utcnow()
    return Record(
        claim=claim, state=state, attempt=claim.attempts_made + 1,
        last_error=None if sent else "451 later", smtp_response="250 ok" if sent else "451 later",
        next_attempt_at=None if sent else now + timedelta(seconds=30), finished_at=now if sent else None,
        outcome=state, server="127.0.0.1:25", smtp_code=250 if sent else 451, smtp_status=None,
        response="250 ok" if sent else "451 later", error=None if sent else "451 later",
        started_at=now, events=(event,),
    )


def test_batch_claim_and_record_keep_the_lifecycle_guards(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(empty_stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        account = f"acct-{uuid.uuid4().hex[:8]}"
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", account)
        ids = await _queue(conn, account, 3)
        db = Database(empty_stack.database_url, pool_size=2)
        claimer = Claimer(db, 30)

        claims = (await claimer.claim(10)).claims
        assert sorted(c.queue_id for c in claims) == sorted(ids)
        assert (await claimer.claim(10)).claims == []  # claimed once, by one holder

        # A fresh message is left to its own wake-up by a settling poll, not by a woken one.
        [fresh] = await _queue(conn, account, 1, age=0)
        assert (await claimer.claim(10, settle=5)).claims == []
        assert [c.queue_id for c in (await claimer.claim(10)).claims] == [fresh]

        by_id = {c.queue_id: c for c in claims}
        sent, deferred, lost = (by_id[i] for i in ids)
        # Another sender took the third one over meanwhile: its outcome is not ours to write.
        await conn.execute("UPDATE outbox SET claim_token = 'someone-else' WHERE id = $1", lost.queue_id)

        bus = Bus(empty_stack.amqp_url)
        await bus.connect()
        recorder = Recorder(db, EventRelay(db, bus), retry_for=1)
        try:
            results = await asyncio.gather(*(recorder.record(_record(c, s)) for c, s in (
                (sent, "sent"), (deferred, "deferred"), (lost, "sent"))))
            await asyncio.wait_for(recorder.drain(), 10)
        finally:
            await bus.close()
            await db.dispose()
        assert results == [True, True, False]

        states = dict(await conn.fetch("SELECT id, state FROM outbox WHERE id = ANY($1)", ids))
        assert states == {sent.queue_id: "sent", deferred.queue_id: "deferred", lost.queue_id: "sending"}
        row = await conn.fetchrow("SELECT attempts_made, claim_token, finished_at FROM outbox WHERE id = $1",
                                  sent.queue_id)
        assert row["attempts_made"] == 1 and row["claim_token"] is None and row["finished_at"] is not None
        retry_at = await conn.fetchval("SELECT next_attempt_at FROM outbox WHERE id = $1", deferred.queue_id)
        assert retry_at > events.utcnow()
        attempts = await conn.fetch("SELECT queue_id, outcome FROM delivery_attempts ORDER BY queue_id")
        assert sorted((a["queue_id"], a["outcome"]) for a in attempts) == sorted(
            [(sent.queue_id, "sent"), (deferred.queue_id, "deferred")])
        # Staged with the state change (the relay loop, not running here, clears published rows).
        staged = {r["routing_key"] for r in await conn.fetch("SELECT routing_key FROM pending_events")}
        assert staged == {"message.sent", "message.delivery_error"}
        await conn.close()

    asyncio.run(scenario())


def test_claims_keep_each_account_within_its_free_connections(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(empty_stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        limited, other = (f"acct-{uuid.uuid4().hex[:8]}" for _ in range(2))
        await conn.execute("""INSERT INTO accounts (id, smtp, limits)
                              VALUES ($1, '{}'::jsonb, '{"connections": 2}'::jsonb)""", limited)
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", other)
        # The limited account's backlog is older: first in line.
        backlog = await _queue(conn, limited, 6, age=120)
        others = await _queue(conn, other, 3, age=60)
        db = Database(empty_stack.database_url, pool_size=2)
        claimer = Claimer(db, 30)
        try:
            # First sight: the account's own limit caps the claim; the rest stays due.
            first = await claimer.claim(6)
            assert sorted(c.queue_id for c in first.claims) == sorted(backlog[:2]) and first.held_back == 4
            # Its connections full here: passed over, so the other account's messages come next.
            second = await claimer.claim(6, connections={limited: 2}, active={limited: 2})
            assert sorted(c.queue_id for c in second.claims) == sorted(others)
            # One connection free again: one more message, and no more.
            third = await claimer.claim(6, connections={limited: 2}, active={limited: 1})
            assert [c.queue_id for c in third.claims] == [backlog[2]]
        finally:
            await db.dispose()
        states = dict(await conn.fetch("SELECT id, state FROM outbox WHERE id = ANY($1)", backlog))
        assert [states[q] for q in backlog] == ["sending"] * 3 + ["queued"] * 3
        held = await conn.fetch("SELECT attempts_made, claim_token FROM outbox WHERE id = ANY($1)", backlog[3:])
        assert all(r["attempts_made"] == 0 and r["claim_token"] is None for r in held)
        await conn.close()

    asyncio.run(scenario())
