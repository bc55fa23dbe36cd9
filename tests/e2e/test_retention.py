"""Retention: finished messages lose their body, then their row; old rate windows and
bounces go; nothing still in flight is touched.  The jobs run in the sender and
imap-sync every ten minutes; here they run once, in-process, on the stack's database,
after the test has aged some rows."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from mailgate_common import retention
from mailgate_common.db import Database
from mailgate_common.settings import load_settings
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, wait_for


def _sql(stack: Stack, query: str, *args: object) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
        try:
            await connection.execute(query, *args)
        finally:
            await connection.close()

    asyncio.run(run())


def _prune(stack: Stack, job: str) -> dict[str, int]:
    settings = load_settings({"MAILGATE_DATABASE_URL": stack.database_url})

    async def run() -> dict[str, int]:
        db = Database(settings.database_url, pool_size=1)
        try:
            result: dict[str, int] = await getattr(retention, job)(db, settings)
            return result
        finally:
            await db.dispose()

    return asyncio.run(run())


def _sent(api: httpx.Client, account: str, smtp_sink: SmtpSink) -> str:
    to = f"keep-{uuid.uuid4().hex[:8]}@example.org"
    queue_id: str = api.post(f"/v1/account/{account}/submit",
                             json={"to": [{"address": to}], "subject": "kept a while", "text": "x"}).json()["queueId"]
    wait_for(lambda: api.get(f"/v1/outbox/{queue_id}").json()["state"] == "sent", message="sent")
    return queue_id


def test_a_finished_messages_body_goes_first_and_its_row_after_the_retention(
    api: httpx.Client, stack: Stack, account: str, smtp_sink: SmtpSink
) -> None:
    old, recent = _sent(api, account, smtp_sink), _sent(api, account, smtp_sink)
    scheduled = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": "later@example.org"}], "text": "x", "sendAt": "2099-01-01T00:00:00Z"}).json()["queueId"]
    _sql(stack, "UPDATE outbox SET finished_at = now() - interval '8 days' WHERE id = $1", old)
    _sql(stack, "UPDATE outbox SET created_at = now() - interval '200 days' WHERE id = $1", scheduled)

    assert _prune(stack, "prune_outbox")["bodies"] >= 1
    entry = api.get(f"/v1/outbox/{old}")
    assert entry.status_code == 200 and entry.json()["subject"] == "kept a while"  # metadata stays
    assert any(step["step"] == "sent" for step in api.get(f"/v1/outbox/{old}/timeline").json()["timeline"])

    _sql(stack, "UPDATE outbox SET finished_at = now() - interval '91 days' WHERE id = $1", old)
    assert _prune(stack, "prune_outbox")["messages"] >= 1
    assert api.get(f"/v1/outbox/{old}").status_code == 404
    assert api.get(f"/v1/outbox/{recent}").json()["state"] == "sent"
    assert api.get(f"/v1/outbox/{scheduled}").json()["state"] == "queued"  # unfinished: never pruned


def test_rate_windows_that_ended_and_old_bounces_are_pruned(stack: Stack, account: str) -> None:
    _sql(stack, "INSERT INTO send_windows (account_id, \"window\", starts_at, count) VALUES "
         "($1, 'day', now() - interval '3 days', 5), ($1, 'day', date_trunc('day', now()), 1)", account)
    _sql(stack, "INSERT INTO bounces (account_id, kind, recipient, reason, hard, bounce_message, created_at) "
         "VALUES ($1, 'bounce', 'old@example.org', 'userunknown', true, $2, now() - interval '200 days'), "
         "($1, 'bounce', 'new@example.org', 'userunknown', true, $3, now())",
         account, uuid.uuid4().hex, uuid.uuid4().hex)
    assert _prune(stack, "prune_outbox")["windows"] >= 1
    assert _prune(stack, "prune_bounces")["bounces"] >= 1

    async def left() -> tuple[int, list[str]]:
        connection = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
        try:
            windows = await connection.fetchval("SELECT count(*) FROM send_windows WHERE account_id = $1", account)
            bounced = await connection.fetch("SELECT recipient FROM bounces WHERE account_id = $1", account)
            return windows, [r["recipient"] for r in bounced]
        finally:
            await connection.close()

    assert asyncio.run(left()) == (1, ["new@example.org"])
