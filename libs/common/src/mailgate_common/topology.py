"""The whole RabbitMQ topology: one exchange, one queue per consuming service.

Each service queue is a durable quorum queue bound to the routing keys that
service consumes.  Beside it live:

* retry queues ``<queue>.retry.<seconds>`` - classic queues with a fixed
  message TTL that dead-letter back into the service queue, so a transient
  failure waits in the broker instead of in an unacked consumer;
* a dead-letter queue ``<queue>.dlq`` for poison messages, inspected and
  re-driven with ``mailgate dlq list|show|redrive``.

Services call :func:`declare` at start; declaring is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

EXCHANGE = "mailgate.events"

# Seconds a failed message waits before its next try, by try number.
RETRY_DELAYS: tuple[int, ...] = (1, 5, 30, 120)


@dataclass(frozen=True)
class ServiceQueue:
    name: str
    bindings: tuple[str, ...]

    def retry_queue(self, delay: int) -> str:
        return f"{self.name}.retry.{delay}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"


SENDER = ServiceQueue("mailgate.sender", ("submission.queued",))
WEBHOOKS = ServiceQueue("mailgate.webhooks", ("message.#", "account.#", "inbound.#"))
IMAP_SYNC = ServiceQueue("mailgate.imap-sync", ("account.changed", "imap.#"))

QUEUES: tuple[ServiceQueue, ...] = (SENDER, WEBHOOKS, IMAP_SYNC)

# Request/reply: the caller waits, so these have no retry or dead-letter queues
# (a request nobody answered in time is worthless) and requests carry a TTL.
# Their keys start with "rpc." so no event binding above (e.g. "imap.#") matches.
IMAP_RPC = ServiceQueue("mailgate.imap-sync.rpc", ("rpc.imap.fetch", "rpc.imap.command"))

RPC_QUEUES: tuple[ServiceQueue, ...] = (IMAP_RPC,)


def retry_delay(attempt: int) -> int:
    """Delay before retry number ``attempt`` (1-based); the last delay repeats.

    How many retries a message gets is the bus's decision (an outage is retried
    for as long as it lasts, a failure that will not pass only a few times)."""
    return RETRY_DELAYS[max(0, min(attempt, len(RETRY_DELAYS)) - 1)]


async def declare(channel: AbstractChannel) -> AbstractExchange:
    exchange = await channel.declare_exchange(
        EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    for queue in QUEUES:
        await declare_queue(channel, exchange, queue)
    for queue in RPC_QUEUES:
        rpc = await channel.declare_queue(
            queue.name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        for key in queue.bindings:
            await rpc.bind(exchange, routing_key=key)
    return exchange


async def declare_queue(
    channel: AbstractChannel, exchange: AbstractExchange, queue: ServiceQueue
) -> None:
    main = await channel.declare_queue(
        queue.name, durable=True, arguments={"x-queue-type": "quorum"}
    )
    for key in queue.bindings:
        await main.bind(exchange, routing_key=key)
    for delay in RETRY_DELAYS:
        await channel.declare_queue(
            queue.retry_queue(delay),
            durable=True,
            arguments={
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue.name,
            },
        )
    await channel.declare_queue(
        queue.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
