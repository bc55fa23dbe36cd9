"""The sender's batched claim, heartbeat and outcome statements against a real PostgreSQL
and RabbitMQ: many messages per round trip, and still every guard of the lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_sender.claims import INLINE_BODY, Claim, Claimer
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
        recorder = Recorder(db, EventRelay(db, bus))
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


async def _connect(stack: Stack) -> Any:
    """A connection to a database where nothing is due but what the test queues next."""
    conn = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute("UPDATE outbox SET state = 'cancelled', claim_token = NULL "
                       "WHERE state IN ('queued', 'deferred', 'sending')")
    return conn


def test_one_unwritable_outcome_does_not_fail_its_batch_and_is_still_recorded(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await _connect(empty_stack)
        account = f"acct-{uuid.uuid4().hex[:8]}"
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", account)
        ids = await _queue(conn, account, 4)
        db = Database(empty_stack.database_url, pool_size=2)
        claims = {c.queue_id: c for c in (await Claimer(db, 30).claim(10)).claims}
        good, sent_nul, failed_surrogate, sent_surrogate = (claims[i] for i in ids)
        # Text no database column or event can hold, as if a reply had not been cleaned.
        nul = dataclasses.replace(_record(sent_nul, "sent"), response="250 ok\x00", smtp_response="250 ok\x00")
        surrogate = _record(failed_surrogate, "failed")
        surrogate = dataclasses.replace(
            surrogate, last_error="550 Empf\udce4nger", error="550 Empf\udce4nger",
            events=(msgspec.structs.replace(surrogate.events[0], error="550 Empf\udce4nger"),))
        sent = _record(sent_surrogate, "sent")
        sent = dataclasses.replace(
            sent, events=(msgspec.structs.replace(sent.events[0], response="250 ok \udce4"),))
        staged_before = await conn.fetchval("SELECT count(*) FROM pending_events")
        bus = Bus(empty_stack.amqp_url)
        await bus.connect()
        recorder = Recorder(db, EventRelay(db, bus))
        try:
            results = await asyncio.gather(*(recorder.record(r) for r in (_record(good, "sent"), nul, surrogate, sent)))
            await asyncio.wait_for(recorder.drain(), 10)
        finally:
            await bus.close()
            await db.dispose()
        assert results == [True, True, True, True]
        rows = {r["id"]: r for r in await conn.fetch(
            "SELECT id, state, attempts_made, claim_token, last_error, smtp_response FROM outbox WHERE id = ANY($1)",
            ids)}
        assert [rows[i]["state"] for i in ids] == ["sent", "sent", "failed", "sent"]
        assert all(r["attempts_made"] == 1 and r["claim_token"] is None for r in rows.values())
        assert rows[ids[0]]["smtp_response"] == "250 ok"  # the good one in full
        assert rows[ids[1]]["smtp_response"] is None  # the others without the server's text
        assert rows[ids[2]]["last_error"] == "550 Empfänger"
        # One event each, the bad ones' cleaned.
        assert await conn.fetchval("SELECT count(*) FROM pending_events") == staged_before + 4
        await conn.close()

    asyncio.run(scenario())


def test_lapsed_claims_are_taken_over_counted_and_never_a_live_one_of_this_process(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await _connect(empty_stack)
        account, resting, limited = (f"acct-{uuid.uuid4().hex[:8]}" for _ in range(3))
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", account)
        await conn.execute("""INSERT INTO accounts (id, smtp, throttled_until)
                              VALUES ($1, '{}'::jsonb, now() + interval '1 hour')""", resting)
        await conn.execute("""INSERT INTO accounts (id, smtp, limits)
                              VALUES ($1, '{}'::jsonb, '{"connections": 1}'::jsonb)""", limited)
        [mine] = await _queue(conn, account, 1, age=120)
        [theirs] = await _queue(conn, account, 1)
        [rest] = await _queue(conn, resting, 1)
        [full] = await _queue(conn, limited, 1)
        db = Database(empty_stack.database_url, pool_size=2)
        here = Claimer(db, 30)
        try:
            assert [c.queue_id for c in (await here.claim(1)).claims] == [mine]
            # The others were claimed by a sender that died; ours lapsed too (the
            # database was away a while), though this process still holds it.
            await conn.execute("UPDATE outbox SET state = 'sending', claim_token = 'dead', "
                               "claimed_until = now() - interval '1 second' WHERE id = ANY($1)", [theirs, rest, full])
            await conn.execute("UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE id = $1", mine)
            assert (await here.claim(10)).claims == []  # only polls with reclaim take claims over
            taken = await here.claim(10, reclaim=True, connections={limited: 1}, active={limited: 1})
            # Not its own live claim, not the resting account's, not the account with no connection free.
            assert [(c.queue_id, c.takeovers) for c in taken.claims] == [(theirs, 1)]
            elsewhere = await Claimer(db, 30).claim(10, reclaim=True)
            assert sorted((c.queue_id, c.takeovers) for c in elsewhere.claims) == sorted([(mine, 1), (full, 1)])
            states = dict(await conn.fetch("SELECT id, state FROM outbox WHERE id = ANY($1)", [mine, theirs, full]))
            assert set(states.values()) == {"sending"}
            assert await conn.fetchval("SELECT takeovers FROM outbox WHERE id = $1", rest) == 0
        finally:
            await db.dispose()
        await conn.close()

    asyncio.run(scenario())


def test_the_heartbeat_renews_held_claims_and_calls_off_a_lost_one(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await _connect(empty_stack)
        account = f"acct-{uuid.uuid4().hex[:8]}"
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", account)
        kept_id, lost_id, sending_id = await _queue(conn, account, 3)
        db = Database(empty_stack.database_url, pool_size=2)
        claimer = Claimer(db, 30)
        try:
            claims = {c.queue_id: c for c in (await claimer.claim(10)).claims}
            await conn.execute("UPDATE outbox SET claimed_until = now() + interval '1 second'")
            waiting = asyncio.create_task(asyncio.sleep(60))
            claims[lost_id].hold.task = waiting
            sending = claims[sending_id].hold.task = asyncio.create_task(asyncio.sleep(60))
            assert claims[sending_id].hold.may_send()  # its body started going out
            await conn.execute("UPDATE outbox SET claim_token = 'someone-else' WHERE id = ANY($1)",
                               [lost_id, sending_id])
            await claimer.renew()
            until = await conn.fetchval("SELECT claimed_until - now() FROM outbox WHERE id = $1", kept_id)
            assert until > timedelta(seconds=25)
            assert not claims[kept_id].hold.lost
            assert claims[lost_id].hold.lost and claims[sending_id].hold.lost
            await asyncio.sleep(0)
            assert waiting.cancelled()  # not sent yet: called off
            assert not sending.done()  # being sent: finished, never cut
            sending.cancel()
            assert not claims[lost_id].hold.may_send()
        finally:
            await db.dispose()
        await conn.close()

    asyncio.run(scenario())


def test_large_bodies_are_left_out_of_the_claim_and_loaded_while_it_is_held(empty_stack: Stack) -> None:
    async def scenario() -> None:
        conn = await _connect(empty_stack)
        account = f"acct-{uuid.uuid4().hex[:8]}"
        await conn.execute("INSERT INTO accounts (id, smtp) VALUES ($1, '{}'::jsonb)", account)
        small_id, large_id = await _queue(conn, account, 2)
        large = b"y" * (INLINE_BODY + 1)
        await conn.execute("UPDATE outbox SET raw = $2 WHERE id = $1", large_id, large)
        db = Database(empty_stack.database_url, pool_size=2)
        claimer = Claimer(db, 30)
        try:
            claims = {c.queue_id: c for c in (await claimer.claim(10)).claims}
            small, big = claims[small_id], claims[large_id]
            assert (small.raw, small.size) == (b"raw", 3)
            assert (big.raw, big.size) == (None, len(large))
            assert await claimer.load_body(big) == large
            await conn.execute("UPDATE outbox SET claim_token = 'someone-else' WHERE id = $1", large_id)
            assert await claimer.load_body(big) is None  # no longer ours
        finally:
            await db.dispose()
        await conn.close()

    asyncio.run(scenario())
