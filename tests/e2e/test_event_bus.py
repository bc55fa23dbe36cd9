"""The event bus against a real RabbitMQ, in a vhost of its own (no service consumes it):
outages are retried for as long as they last, other failures a few times and then
dead-lettered, and `mailgate dlq` reads and re-drives what was dead-lettered."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aio_pika
import asyncpg
import pytest

from mailgate_common import events, topology
from mailgate_common.bus import Bus
from tests.support.stack import AMQP_BASE, BIN, Stack, _rabbitmqctl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"mailgate_bus_{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"{AMQP_BASE}/{name}"
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture
async def bus(vhost: str) -> AsyncIterator[Bus]:
    bus = Bus(vhost, max_retries=1)
    await bus.connect()
    yield bus
    await bus.stop_consuming(grace=1)
    await bus.close()


def _event() -> events.MessageFailed:
    return events.MessageFailed(account="a", queue_id=uuid.uuid4().hex, message_id="<m@x>", error="e")


async def _dead_letters(url: str, queue: topology.ServiceQueue) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue.dead_letter_queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


async def eventually(check: Callable[[], object], seconds: float, what: str = "condition") -> None:
    """Poll ``check`` (sync or async) until it is true; AssertionError after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_an_outage_is_retried_past_the_retry_limit_until_it_ends(bus: Bus) -> None:
    tries: list[float] = []

    async def handler(event: events.AnyEvent) -> None:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) < 3:  # the database is away for the first two tries
            raise asyncpg.CannotConnectNowError("the database system is starting up")

    await bus.consume(topology.WEBHOOKS, handler, prefetch=4)
    await bus.publish(_event())
    # max_retries=1, yet the third try (after 1 s and 5 s) is made and succeeds.
    await eventually(lambda: len(tries) >= 3, 30)
    assert tries[2] - tries[1] >= 4  # the second delay, not a tight loop


async def test_a_failure_that_is_not_an_outage_is_dead_lettered_after_the_retry_limit(bus: Bus, vhost: str) -> None:
    tries = 0

    async def handler(event: events.AnyEvent) -> None:
        nonlocal tries
        tries += 1
        raise ValueError("this event can never be handled")

    await bus.consume(topology.WEBHOOKS, handler, prefetch=4)
    await bus.publish(_event())
    await eventually(lambda: tries >= 2, 15)
    await asyncio.sleep(0.5)
    assert await _dead_letters(vhost, topology.WEBHOOKS) == 1
    assert tries == 2  # the first try and max_retries=1 retry


def _dlq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mailgate"), "dlq", *args], env={"MAILGATE_AMQP_URL": url, "PATH": ""},
                          capture_output=True, text=True, timeout=60, check=True)


async def test_dead_letters_can_be_listed_shown_and_redriven_once_fixed(bus: Bus, vhost: str) -> None:
    fixed = False
    handled: list[str] = []

    async def handler(event: events.AnyEvent) -> None:
        if not fixed:
            raise KeyError("a bug, deployed away below")
        handled.append(event.id)

    await bus.consume(topology.WEBHOOKS, handler, prefetch=4)
    lost = _event()
    await bus.publish(lost)
    await eventually(lambda: _dead_letters(vhost, topology.WEBHOOKS), 15, "a dead letter")

    listing = await asyncio.to_thread(_dlq, vhost, "list")
    assert "mailgate.webhooks.dlq\t1" in listing.stdout
    shown_out = (await asyncio.to_thread(_dlq, vhost, "show", "webhooks")).stdout
    shown = [json.loads(line) for line in shown_out.splitlines()]
    assert [s["id"] for s in shown] == [lost.id]
    assert "KeyError" in shown[0]["error"]
    assert await _dead_letters(vhost, topology.WEBHOOKS) == 1  # showing takes nothing away

    fixed = True
    moved = await asyncio.to_thread(_dlq, vhost, "redrive", "webhooks")
    assert "re-drove 1 event" in moved.stdout
    await eventually(lambda: handled == [lost.id], 15)
    assert await _dead_letters(vhost, topology.WEBHOOKS) == 0


async def test_a_row_left_in_pending_events_is_published_by_the_relay(stack: Stack, webhook_receiver: object) -> None:
    """An event committed but never published (a crash, an outage) reaches its subscribers."""
    from tests.support.webhook_receiver import WebhookReceiver

    assert isinstance(webhook_receiver, WebhookReceiver)
    event = events.MessageFailed(account="relay-test", queue_id=uuid.uuid4().hex, message_id="<r@x>",
                                 error="left behind")
    connection = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "INSERT INTO pending_events (id, routing_key, body, created_at) "
            "VALUES ($1, $2, $3, now() - interval '1 minute')",
            event.id, event.routing_key, events.encode(event))
        await eventually(lambda: webhook_receiver.received("messageFailed", queueId=event.queue_id), 30,
                         "the event at the webhook receiver")

        async def forgotten() -> bool:
            return not await connection.fetchval("SELECT count(*) FROM pending_events WHERE id = $1", event.id)

        await eventually(forgotten, 30, "the published row deleted")
    finally:
        await connection.close()
