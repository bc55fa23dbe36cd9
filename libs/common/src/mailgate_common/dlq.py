"""``mailgate dlq``: read and re-drive the dead-letter queues.

An event lands in ``<queue>.dlq`` when its handler failed on the event itself
``bus_max_retries`` times (or its body did not decode); outages never put it
there.  Once the cause is fixed (a bug deployed away, an account repaired),
``redrive`` puts the events back on their service queue with a fresh retry
count.  Messages are moved one at a time, acknowledged on the dead-letter
queue only after the broker confirmed the copy: a crash mid-way loses nothing
(at worst one event is handled twice, which every consumer tolerates).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aio_pika
import click
from aio_pika.abc import AbstractIncomingMessage

from mailgate_common import topology
from mailgate_common.bus import ERROR_HEADER, RETRIES_HEADER
from mailgate_common.settings import load_settings_or_exit

# How long to wait for the next message of a queue that says it has more.
GET_TIMEOUT = 5.0


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    type: str | None
    error: str
    retries: int
    body: bytes

    def summary(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body[:200].decode("utf-8", "replace")
        return {"id": self.message_id, "type": self.type, "error": self.error, "retries": self.retries,
                "body": body}


def service_queue(name: str) -> topology.ServiceQueue:
    """A service queue by its short name (``sender``) or full name (``mailgate.sender``)."""
    for queue in topology.QUEUES:
        if name in (queue.name, queue.name.removeprefix("mailgate."), queue.dead_letter_queue):
            return queue
    known = ", ".join(q.name.removeprefix("mailgate.") for q in topology.QUEUES)
    raise click.BadParameter(f"no queue {name!r}; one of: {known}")


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(message.message_id, message.type, str(headers.get(ERROR_HEADER, "")),
                      int(str(headers.get(RETRIES_HEADER, 0) or 0)), message.body)


async def depths(url: str) -> dict[str, int]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await topology.declare(channel)
        result = {}
        for queue in topology.QUEUES:
            declared = await channel.declare_queue(queue.dead_letter_queue, passive=True)
            result[queue.dead_letter_queue] = declared.declaration_result.message_count or 0
        return result
    finally:
        await connection.close()


async def take(url: str, queue: topology.ServiceQueue, limit: int, *, redrive: bool,
               ids: frozenset[str] = frozenset()) -> list[DeadLetter]:
    """Up to ``limit`` dead letters (only ``ids`` when given); with ``redrive``, moved back."""
    connection = await aio_pika.connect(url)
    seen: list[DeadLetter] = []
    held: list[AbstractIncomingMessage] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel)
        dlq = await channel.declare_queue(queue.dead_letter_queue, passive=True)
        left = dlq.declaration_result.message_count or 0
        while left > 0 and len(seen) < limit:
            message = await dlq.get(no_ack=False, fail=False, timeout=GET_TIMEOUT)
            if message is None:
                break
            left -= 1
            letter = _dead_letter(message)
            if ids and letter.message_id not in ids:
                held.append(message)
                continue
            seen.append(letter)
            if not redrive:
                held.append(message)  # unacked until the end: each message is read once
                continue
            headers = {k: v for k, v in (message.headers or {}).items() if k not in (ERROR_HEADER, RETRIES_HEADER)}
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, content_type=message.content_type, message_id=message.message_id,
                                 type=message.type, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
            )
            await message.ack()
        for message in held:
            await message.nack(requeue=True)
        return seen
    finally:
        await connection.close()


@click.group("dlq")
def dlq_group() -> None:
    """Dead-letter queues: events whose handler kept failing on the event itself."""


@dlq_group.command("list")
def list_command() -> None:
    """How many dead letters each service queue has."""
    settings = load_settings_or_exit()
    for name, count in asyncio.run(depths(settings.amqp_url)).items():
        click.echo(f"{name}\t{count}")


@dlq_group.command("show")
@click.argument("queue")
@click.option("--limit", default=20, show_default=True, help="At most this many.")
def show_command(queue: str, limit: int) -> None:
    """Print dead letters of QUEUE (sender, webhooks, imap-sync) as JSON lines; they stay queued."""
    settings = load_settings_or_exit()
    for letter in asyncio.run(take(settings.amqp_url, service_queue(queue), limit, redrive=False)):
        click.echo(json.dumps(letter.summary()))


@dlq_group.command("redrive")
@click.argument("queue")
@click.option("--limit", default=1000, show_default=True, help="At most this many.")
@click.option("--id", "ids", multiple=True, help="Only the event with this id (repeatable).")
def redrive_command(queue: str, limit: int, ids: tuple[str, ...]) -> None:
    """Put dead letters of QUEUE back on the service queue, with a fresh retry count."""
    settings = load_settings_or_exit()
    moved = asyncio.run(take(settings.amqp_url, service_queue(queue), limit, redrive=True, ids=frozenset(ids)))
    click.echo(f"re-drove {len(moved)} event(s) to {service_queue(queue).name}")
