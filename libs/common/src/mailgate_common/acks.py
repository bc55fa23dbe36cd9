"""Acknowledging a channel's deliveries in runs.

A store batch finishes tens of events in the same loop iteration; acking each
costs a frame, a socket write and broker work apiece (the webhooks service's
largest cost after its queries).  Deliveries handled together are acked with
one ``multiple`` ack of the highest delivery tag below which nothing is still
open.

A multiple ack covers every unsettled delivery up to its tag, so it must never
reach past a delivery still being handled: that one would be acked unhandled,
and lost if this process then died.  Hence every delivery is registered when it
arrives (``received``, in delivery order: aiormq starts one task per delivery
in frame order) and stays open until its own ack or nack has been sent.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage


class AckRuns:
    """The open deliveries of one channel, and the acks waiting to be written."""

    def __init__(self) -> None:
        self._open: set[int] = set()  # received, not yet settled
        self._handled: dict[int, AbstractIncomingMessage] = {}  # to ack in the next write
        self._writing: set[int] = set()  # in a write under way
        self._written: asyncio.Future[None] | None = None

    def received(self, message: AbstractIncomingMessage) -> None:
        assert message.delivery_tag is not None
        self._open.add(message.delivery_tag)

    def settled(self, message: AbstractIncomingMessage) -> None:
        """Acked or nacked on its own (retry, dead letter, requeue), and that
        frame already sent: it no longer holds back a run.  A delivery whose ack
        is still to be written stays open until then (its handler may be
        cancelled while it waits): a later run must not cover it as well, or the
        broker would see its tag acked twice and close the channel."""
        tag = message.delivery_tag or 0
        if tag not in self._handled and tag not in self._writing:
            self._open.discard(tag)

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack ``message`` together with the others handled in this loop iteration;
        returns once its ack has been written."""
        assert message.delivery_tag is not None
        self._handled[message.delivery_tag] = message
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._start_write)
        # Shielded: one cancelled handler must not cancel the others' write.
        await asyncio.shield(self._written)

    def _start_write(self) -> None:
        written, self._written = self._written, None
        handled, self._handled = self._handled, {}
        assert written is not None
        self._writing.update(handled)
        task = asyncio.ensure_future(self._write(handled))

        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                written.cancel()
            elif t.exception() is not None:
                written.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                written.set_result(None)
            # Retrieved here, so an unawaited failure is not reported twice.
            if not written.cancelled():
                written.exception()

        task.add_done_callback(done)

    async def _write(self, handled: dict[int, AbstractIncomingMessage]) -> None:
        try:
            still_open = [tag for tag in self._open if tag not in handled]
            below = min(still_open, default=None)
            run = sorted(tag for tag in handled if below is None or tag < below)
            if len(run) > 1:
                await handled[run[-1]].ack(multiple=True)
            elif run:
                await handled[run[0]].ack()
            for tag in sorted(handled):
                if below is not None and tag > below:
                    await handled[tag].ack()
        finally:
            self._writing.difference_update(handled)
            self._open.difference_update(handled)
