"""A small event bus over aio-pika.

Publishing waits for the broker's confirm and marks messages persistent, so a
returned ``publish`` means the event survives a broker restart; every publish
has a deadline (``bus_publish_timeout``), so a broker that blocks publishers
(a memory or disk alarm) cannot freeze a caller: whatever was staged in
``pending_events`` is published later by the relay.  Consuming acks only
after the handler returned, i.e. after its work was committed.  A handler that
raises is retried through the delay queues of :mod:`mailgate_common.topology`:
for as long as an outage lasts (:func:`mailgate_common.failures.is_transient`),
and ``bus_max_retries`` times for any other failure, which then goes to the
dead-letter queue - at once for bodies that do not decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from opentelemetry import trace
from prometheus_client import Counter

from mailgate_common import events, topology
from mailgate_common.acks import AckRuns
from mailgate_common.failures import is_transient
from mailgate_common.settings import Settings
from mailgate_common.telemetry import context_from_traceparent, current_traceparent

log = logging.getLogger(__name__)
tracer = trace.get_tracer("mailgate.bus")

RETRIES_HEADER = "x-mailgate-retries"
ERROR_HEADER = "x-mailgate-error"

Handler = Callable[[events.AnyEvent], Awaitable[None]]

# RabbitMQ's direct reply-to: replies go straight to the requesting channel,
# no reply queue to declare or clean up.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
RPC_STATUS_HEADER = "x-mailgate-status"


@dataclass(frozen=True)
class RpcReply:
    """An answer to :meth:`Bus.request`; ``status`` follows HTTP (200, 404, 500...)."""

    body: bytes
    status: int = 200
    content_type: str | None = None


RpcHandler = Callable[[events.AnyEvent], Awaitable[RpcReply]]

EVENTS_PUBLISHED = Counter(
    "mailgate_events_published_total", "Events confirmed by the broker", ["routing_key"]
)
EVENTS_CONSUMED = Counter(
    "mailgate_events_consumed_total", "Events handled, by outcome", ["queue", "outcome"]
)
DEAD_LETTERED = Counter(
    "mailgate_events_dead_lettered_total", "Events moved to a dead-letter queue", ["queue"]
)


async def _traced(span: trace.Span, handler: Handler, event: events.AnyEvent) -> None:
    with trace.use_span(span, end_on_exit=True):
        await handler(event)


class Bus:
    def __init__(self, url: str, *, max_retries: int = 5, publish_timeout: float = 5.0) -> None:
        self._url = url
        self.max_retries = max_retries
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._hint_exchange: AbstractExchange | None = None
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._rpc_channel: AbstractRobustChannel | None = None
        self._rpc_exchange: AbstractExchange | None = None
        self._rpc_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[RpcReply]] = {}
        # Per consuming channel (a reconnect brings a new one, with new delivery tags).
        self._ack_runs: weakref.WeakKeyDictionary[object, AckRuns] = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, settings: Settings) -> Bus:
        return cls(settings.amqp_url, max_retries=settings.bus_max_retries,
                   publish_timeout=settings.bus_publish_timeout)

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await topology.declare(self._publish_channel)
        # Wake-up hints go out without publisher confirms: losing one costs a
        # poll interval, while waiting for a quorum queue's confirm would add its
        # disk write to every submit's answer.
        hint_channel = await self._connection.channel(publisher_confirms=False)
        self._hint_exchange = await hint_channel.declare_exchange(
            topology.EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publish(self, event: events.Event, *, confirm: bool = True) -> None:
        """Publish ``event``; with ``confirm`` (the default) return once the broker
        has it safely; without, once it is written to the connection."""
        exchange = self._exchange if confirm else self._hint_exchange
        assert exchange is not None, "Bus.connect() first"
        traceparent = event.traceparent or current_traceparent()
        headers: dict[str, aio_pika.abc.FieldValue] = {}
        if traceparent:
            headers["traceparent"] = traceparent
        message = aio_pika.Message(
            events.encode(event),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.routing_key,
            headers=headers,
        )
        async with asyncio.timeout(self.publish_timeout):
            await exchange.publish(message, routing_key=event.routing_key)
        EVENTS_PUBLISHED.labels(event.routing_key).inc()

    async def consume(
        self, queue: topology.ServiceQueue, handler: Handler, prefetch: int
    ) -> None:
        """Start handling ``queue``; returns once the consumer is registered."""
        assert self._connection is not None, "Bus.connect() first"
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        await topology.declare(channel)
        await self._register(channel, queue, lambda m: self._handle(queue, m, handler))

    async def _register(
        self,
        channel: AbstractRobustChannel,
        queue: topology.ServiceQueue,
        work: Callable[[AbstractIncomingMessage], Awaitable[None]],
    ) -> None:
        """Consume ``queue`` with ``work``, tracking in-flight messages for a clean stop."""
        amqp_queue = await channel.get_queue(queue.name)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.add(task)
            self._idle.clear()
            try:
                await work(message)
            finally:
                self._in_flight.discard(task)
                if not self._in_flight:
                    self._idle.set()

        tag = await amqp_queue.consume(on_message)
        self._consumers.append((amqp_queue, tag))

    async def _handle(
        self,
        queue: topology.ServiceQueue,
        message: AbstractIncomingMessage,
        handler: Handler,
    ) -> None:
        runs = self._ack_runs.get(message.channel)
        if runs is None:
            runs = self._ack_runs[message.channel] = AckRuns()
        # Before any await: deliveries register in the order they arrived.
        runs.received(message)
        try:
            await self._settle(queue, message, handler, runs)
        finally:
            runs.settled(message)

    async def _settle(
        self,
        queue: topology.ServiceQueue,
        message: AbstractIncomingMessage,
        handler: Handler,
        runs: AckRuns,
    ) -> None:
        try:
            event = events.decode(message.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("undecodable message on %s: %s", queue.name, exc)
            await self._dead_letter(queue, message, f"undecodable: {exc}")
            return
        span = tracer.start_span(
            f"handle {event.routing_key}",
            context=context_from_traceparent(event.traceparent),
            attributes={"messaging.destination": queue.name, "mailgate.event_id": event.id},
        )
        work = asyncio.ensure_future(_traced(span, handler, event))
        try:
            # Shielded: when the broker connection drops, aio-pika cancels this
            # task, but work that already started (an SMTP transaction, say)
            # must finish and be recorded, or it would be done twice later.
            await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            raise
        except Exception as exc:
            await self._retry_or_dead_letter(queue, message, exc)
            return
        await runs.ack(message)
        EVENTS_CONSUMED.labels(queue.name, "ok").inc()

    async def _retry_or_dead_letter(
        self,
        queue: topology.ServiceQueue,
        message: AbstractIncomingMessage,
        exc: Exception,
    ) -> None:
        retries = int(str((message.headers or {}).get(RETRIES_HEADER, 0) or 0)) + 1
        outage = is_transient(exc)
        if not outage and retries > self.max_retries:
            log.error("giving up on %s after %d retries: %r", message.type, retries - 1, exc)
            await self._dead_letter(queue, message, repr(exc))
            return
        delay = topology.retry_delay(retries)
        log.warning("retrying %s in %ss (try %d%s): %r", message.type, delay, retries,
                    ", an outage: until it ends" if outage else f" of {self.max_retries}", exc)
        await self._republish(message, queue.retry_queue(delay), {RETRIES_HEADER: retries})
        await message.ack()
        EVENTS_CONSUMED.labels(queue.name, "retried").inc()

    async def _dead_letter(
        self, queue: topology.ServiceQueue, message: AbstractIncomingMessage, reason: str
    ) -> None:
        await self._republish(message, queue.dead_letter_queue, {ERROR_HEADER: reason[:1000]})
        await message.ack()
        DEAD_LETTERED.labels(queue.name).inc()
        EVENTS_CONSUMED.labels(queue.name, "dead_lettered").inc()

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        queue_name: str,
        extra_headers: dict[str, aio_pika.abc.FieldValue],
    ) -> None:
        assert self._publish_channel is not None
        headers = dict(message.headers or {})
        headers.update(extra_headers)
        copy = aio_pika.Message(
            message.body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            type=message.type,
            headers=headers,
        )
        # The default exchange routes by queue name.
        async with asyncio.timeout(self.publish_timeout):
            await self._publish_channel.default_exchange.publish(copy, routing_key=queue_name)

    # --- request/reply ----------------------------------------------------

    async def _reply_channel(self) -> AbstractExchange:
        async with self._rpc_lock:
            if self._rpc_exchange is None:
                assert self._connection is not None, "Bus.connect() first"
                # Requests must be published on the channel that consumes the replies.
                channel = await self._connection.channel(publisher_confirms=True)
                exchange = await topology.declare(channel)
                await self._consume_replies(channel)
                # The pseudo-queue is not declared, so aio-pika would not restore
                # its consumer after a reconnect; do it ourselves.
                channel.reopen_callbacks.add(self._consume_replies)
                self._rpc_channel, self._rpc_exchange = channel, exchange
            return self._rpc_exchange

    async def _consume_replies(self, channel: AbstractRobustChannel | None, /) -> None:
        if channel is None:
            return
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return  # the caller gave up already
        status = int(str((message.headers or {}).get(RPC_STATUS_HEADER, 200)))
        future.set_result(RpcReply(message.body, status, message.content_type))

    async def request(self, event: events.Event, wait: float) -> RpcReply:
        """Send a request event and wait for one reply; TimeoutError after ``wait`` s."""
        exchange = await self._reply_channel()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            message = aio_pika.Message(
                events.encode(event),
                content_type="application/json",
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                message_id=event.id,
                type=event.routing_key,
                # Nobody should work on a request its caller stopped waiting for.
                expiration=wait,
            )
            async with asyncio.timeout(wait):
                await exchange.publish(message, routing_key=event.routing_key)
                return await future
        finally:
            self._pending.pop(correlation_id, None)

    async def serve(
        self, queue: topology.ServiceQueue, handler: RpcHandler, prefetch: int
    ) -> None:
        """Answer requests from ``queue`` with ``handler``'s reply; never retried."""
        assert self._connection is not None, "Bus.connect() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        await topology.declare(channel)
        await self._register(channel, queue, lambda m: self._answer(queue, channel, m, handler))

    async def _answer(
        self,
        queue: topology.ServiceQueue,
        channel: AbstractRobustChannel,
        message: AbstractIncomingMessage,
        handler: RpcHandler,
    ) -> None:
        try:
            event = events.decode(message.body)
            with tracer.start_as_current_span(
                f"answer {event.routing_key}",
                context=context_from_traceparent(event.traceparent),
                attributes={"messaging.destination": queue.name},
            ):
                reply = await handler(event)
            EVENTS_CONSUMED.labels(queue.name, "ok").inc()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            raise
        except Exception as exc:
            # The caller is waiting: tell it now rather than retrying behind its back.
            log.warning("request %s on %s failed: %r", message.type, queue.name, exc)
            reply = RpcReply(repr(exc).encode(), 500, "text/plain")
            EVENTS_CONSUMED.labels(queue.name, "failed").inc()
        if message.reply_to:
            answer = aio_pika.Message(
                reply.body,
                content_type=reply.content_type,
                correlation_id=message.correlation_id,
                headers={RPC_STATUS_HEADER: reply.status},
            )
            try:
                async with asyncio.timeout(self.publish_timeout):
                    await channel.default_exchange.publish(answer, routing_key=message.reply_to)
            except Exception as exc:  # the caller went away; nothing to do
                log.info("could not reply to %s: %r", message.type, exc)
        await message.ack()

    async def stop_consuming(self, grace: float = 20.0) -> None:
        """Stop taking new messages and let in-flight handlers finish (or hand back)."""
        for amqp_queue, tag in self._consumers:
            try:
                await amqp_queue.cancel(tag)
            except Exception as exc:  # a closed channel already stopped delivering
                log.debug("cancel %s: %r", tag, exc)
        self._consumers.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            for task in list(self._in_flight):
                task.cancel()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
