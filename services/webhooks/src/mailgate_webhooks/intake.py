"""Events in, deliveries stored: a batch of events becomes one INSERT.

Throughput comes from doing per *batch* what would otherwise be done per
delivery: the events waiting on the bus are stored together, and the
deliveries that have a free slot are claimed by that same INSERT, so they are
POSTed right after the commit without another round trip and no other replica
can take them.  The rest stay unclaimed for the scheduler's refills and the
pollers.  The bus acknowledges an event once this returns.

If the database is away, :class:`DeliveriesNotStored` (a transient failure)
reaches the bus, which retries the event for as long as the outage lasts.

Routed events (``inboundMessage``) skip the subscriptions: their bodies are
rendered from the stored messages and go to the endpoints they name
(inbound.py, plan.plan_routed), in the same INSERT as the batch's other deliveries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from opentelemetry import context as otel_context

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.failures import TransientError, is_transient
from mailgate_webhooks import plan, store
from mailgate_webhooks.claims import create_service_secret, new_claim_token
from mailgate_webhooks.inbound import InboundRenderer
from mailgate_webhooks.jobs import Job, Target, TraceContexts
from mailgate_webhooks.scheduler import Scheduler
from mailgate_webhooks.targets import Targets

Received = tuple[events.Event, otel_context.Context | None]


class DeliveriesNotStored(TransientError):
    """The database is away: the events stay with the bus until it is back."""


class Intake:
    def __init__(self, db: Database, targets: Targets, scheduler: Scheduler, contexts: TraceContexts, *,
                 hold: float, service_url: str | None, clock: Callable[[], float],
                 inbound: InboundRenderer) -> None:
        self.db = db
        self.targets = targets
        self.scheduler = scheduler
        self.contexts = contexts
        self.hold = hold
        self.service_url = service_url
        self.clock = clock
        self.inbound = inbound

    async def store_batch(self, batch: Sequence[Received]) -> list[list[Job]]:
        """Store one delivery per event and subscribed destination; returns, per
        event, the deliveries claimed for an immediate POST (slots taken)."""
        try:
            return await self._store_batch(batch)
        except Exception as exc:
            if is_transient(exc):
                raise DeliveriesNotStored(f"webhook deliveries not stored: {exc!r}") from exc
            raise

    async def _store_batch(self, batch: Sequence[Received]) -> list[list[Job]]:
        result: list[list[Job]] = [[] for _ in batch]
        wanted = [plan.Wanted(i, event, name) for i, (event, _) in enumerate(batch)
                  if (name := event.webhook_name()) is not None]
        if not wanted:
            return result
        routed = [w for w in wanted if plan.is_routed(w.event)]
        subscribed_to = [w for w in wanted if not plan.is_routed(w.event)]
        planned = await self._plan_subscribed(subscribed_to) if subscribed_to else []
        if routed:
            rendered = await self.inbound.render(self.db, routed)
            planned += plan.plan_routed(routed, rendered.bodies, rendered.endpoints, _After(self.scheduler, planned),
                                        endpoint_target=self._endpoint_target)
        if not planned:
            return result
        granted = [p.dest for p in planned if p.target is not None]
        for dest in granted:
            self.scheduler.take(dest)
        token = new_claim_token()
        try:
            async with store.connection(self.db) as conn:
                rows = await store.insert_deliveries(conn, [_new_delivery(p) for p in planned], token, self.hold)
        except BaseException:
            for dest in granted:
                self.scheduler.give_back(dest)
            raise
        claimed_at = self.clock()
        stored = {(row.event_id, row.dest): row for row in rows}
        for p in planned:
            # pop: the same event twice in one batch (a redelivery) is one row, one POST.
            row = stored.pop((p.wanted.event.id, p.dest), None)
            context = batch[p.wanted.index][1]
            if row is None:  # stored before (the bus redelivered the event)
                if p.target is not None:
                    self.scheduler.give_back(p.dest)
                continue
            if p.target is None:
                if p.ready:
                    self.scheduler.spill(p.dest)
                    self.contexts.remember(row.id, context)
                continue
            result[p.wanted.index].append(Job(
                delivery_id=row.id, claim_token=token, endpoint_id=p.endpoint_id, event_id=p.wanted.event.id,
                event=p.wanted.name, payload=p.payload, attempts_made=0, retry_from=row.retry_from,
                target=p.target, claimed_at=claimed_at, context=context,
            ))
        return result

    async def _plan_subscribed(self, wanted: list[plan.Wanted]) -> list[plan.PlannedDelivery]:
        accounts = sorted({w.event.account or "" for w in wanted})
        names = sorted({"*", *(w.name for w in wanted)})
        # Outside any transaction: a batch nobody subscribes to (every event when no
        # webhook is set up; every messageSent when only bounces are wanted) costs
        # this one statement.
        async with store.connection(self.db) as conn:
            subscribed = await store.subscriptions(conn, accounts, names)
            if not plan.anyone_wants(subscribed, wanted):
                return []
            endpoints = await store.endpoints_for(conn, names, accounts) if subscribed.endpoints_may_match else []
        service_secret: str | None = subscribed.settings["serviceSecret"]
        if service_secret is None and any(plan.urls_for(subscribed, w.event, w.name) for w in wanted):
            service_secret = await create_service_secret(self.db)
        return plan.plan(
            wanted, subscribed, endpoints, self.scheduler, service_secret=service_secret,
            endpoint_target=self._endpoint_target, service_url=self.service_url,
        )

    def _endpoint_target(self, endpoint: store.EndpointRow) -> Target:
        return self.targets.for_endpoint(endpoint.url, endpoint.headers, endpoint.secret,
                                         endpoint.previous_secret, endpoint.id)


def _new_delivery(p: plan.PlannedDelivery) -> store.NewDelivery:
    event = p.wanted.event
    return store.NewDelivery(
        event_id=event.id, event=p.wanted.name, account_id=event.account,
        queue_id=getattr(event, "queue_id", None), url=p.url, endpoint_id=p.endpoint_id, payload=p.payload,
        claim=p.target is not None,
    )


class _After:
    """The free slots once the deliveries already planned in this batch have theirs."""

    def __init__(self, slots: plan.FreeSlots, planned: Sequence[plan.PlannedDelivery]) -> None:
        self.slots = slots
        self.granted = Counter(p.dest for p in planned if p.target is not None)

    def room(self, dest: str) -> int:
        return self.slots.room(dest) - self.granted[dest]

    def free(self) -> int:
        return self.slots.free() - sum(self.granted.values())
