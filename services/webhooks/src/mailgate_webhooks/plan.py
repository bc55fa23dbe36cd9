"""Which deliveries a batch of events makes, and which of them get a slot now.

Pure: everything read from the database (subscriptions, candidate endpoints,
the service secret) and the free slots are inputs; the answer is the list of
deliveries to store.  A delivery goes either to a webhook endpoint (signed with
the endpoint's secret) or to the EmailEngine-style settings/account URL (signed
with the service secret).

Routed events (``inboundMessage``) name their endpoints themselves: they go to
those endpoints only, whatever their event filters, and never to the
settings/account URLs (:func:`plan_routed`; :func:`plan` leaves them out).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailgate_common import events
from mailgate_webhooks.jobs import Target
from mailgate_webhooks.payload import render, wants
from mailgate_webhooks.store import EndpointRow, Subscriptions
from mailgate_webhooks.targets import Targets

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wanted:
    """An event of the batch that has a webhook name."""

    index: int  # its position in the batch
    event: events.Event
    name: str  # EmailEngine event name, e.g. "messageSent"


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    wanted: Wanted
    url: str
    endpoint_id: str | None
    payload: bytes
    target: Target | None  # set: a slot is granted, POST right after storing
    ready: bool  # the destination takes attempts now (else it waits for a probe)

    @property
    def dest(self) -> str:
        return self.endpoint_id or self.url


class FreeSlots(Protocol):
    def room(self, dest: str) -> int:
        """How many more POSTs ``dest`` may start now."""

    def free(self) -> int:
        """How many more POSTs this replica may start now."""


class Grants:
    """Slots granted while planning one batch, counted against the free ones."""

    def __init__(self, slots: FreeSlots) -> None:
        self.slots = slots
        self.granted: Counter[str] = Counter()
        self.total = 0

    def take(self, dest: str) -> bool:
        if self.slots.room(dest) - self.granted[dest] <= 0 or self.slots.free() - self.total <= 0:
            return False
        self.granted[dest] += 1
        self.total += 1
        return True


def is_routed(event: events.Event) -> bool:
    """Does the event name its endpoints (no subscription applies to it)?"""
    return isinstance(event, events.InboundMessage)


def urls_for(subscribed: Subscriptions, event: events.Event, name: str) -> list[str]:
    """The settings and account webhook URLs that want this event."""
    if is_routed(event):
        return []
    config = subscribed.settings
    found: list[str] = []
    if config["webhooks"] and config["webhooksEnabled"] and wants(config["webhookEvents"], name):
        found.append(config["webhooks"])
    account_url = subscribed.account_urls.get(event.account or "")
    if account_url and account_url not in found:
        found.append(account_url)
    return found


def anyone_wants(subscribed: Subscriptions, wanted: Sequence[Wanted]) -> bool:
    """False lets a batch nobody subscribes to skip storing altogether."""
    return subscribed.endpoints_may_match or any(urls_for(subscribed, w.event, w.name) for w in wanted)


def endpoint_matches(endpoint: EndpointRow, name: str, account: str | None, machine: bool = False) -> bool:
    """Is this (enabled) endpoint subscribed to this event name and account?

    ``machine``: the event is an open or click flagged as machine-made, which
    endpoints with ``excludeMachine`` do not get.
    """
    account_key = account or ""
    return (
        (endpoint.account_id is None or endpoint.account_id == account_key)
        and ("*" in endpoint.events or name in endpoint.events)
        and (not endpoint.accounts or account_key in endpoint.accounts)
        and not (machine and endpoint.exclude_machine)
    )


def is_machine(event: events.Event) -> bool:
    """An open or click no person made (Apple MPP, a link scanner, prefetch...)."""
    return isinstance(event, (events.TrackOpen, events.TrackClick)) and event.machine


def plan(
    wanted: Sequence[Wanted],
    subscribed: Subscriptions,
    endpoints: Sequence[EndpointRow],
    slots: FreeSlots,
    *,
    service_secret: str | None,
    endpoint_target: Callable[[EndpointRow], Target],
    service_url: str | None,
) -> list[PlannedDelivery]:
    """One delivery per event and subscribed destination, in batch order.

    A delivery gets a slot (a ``target``) while its destination and the replica
    have room, counting the slots granted earlier in this batch; the caller
    takes them.  ``service_secret`` must be set when some URL wants an event.
    """
    service_url = subscribed.settings["serviceUrl"] or service_url
    grants = Grants(slots)
    slot_for = grants.take
    targets: dict[str, Target] = {}
    planned: list[PlannedDelivery] = []

    for item in wanted:
        event, name = item.event, item.name
        if is_routed(event):
            continue
        urls = urls_for(subscribed, event, name)
        machine = is_machine(event)
        matching = [e for e in endpoints if endpoint_matches(e, name, event.account, machine)]
        if not urls and not matching:
            continue
        body = render(event, name, service_url)
        for url in urls:
            if service_secret is None:
                raise ValueError("plan: a URL wants this event but no service secret was given")
            target = Targets.for_url(url, service_secret) if slot_for(url) else None
            planned.append(PlannedDelivery(item, url, None, body, target, ready=True))
        for endpoint in matching:
            target = None
            if endpoint.ready and slot_for(endpoint.id):
                target = targets.get(endpoint.id)
                if target is None:
                    target = targets[endpoint.id] = endpoint_target(endpoint)
            planned.append(PlannedDelivery(item, endpoint.url, endpoint.id, body, target, ready=endpoint.ready))
    return planned




def plan_routed(
    wanted: Sequence[Wanted],
    bodies: Mapping[int, bytes],
    endpoints: Mapping[str, EndpointRow],
    slots: FreeSlots,
    *,
    endpoint_target: Callable[[EndpointRow], Target],
) -> list[PlannedDelivery]:
    """One delivery per routed event (``wanted``) and endpoint it names.

    ``bodies``: the rendered body of each event, by its batch index (an event
    without one, its stored message gone, makes no delivery); ``endpoints``:
    the enabled endpoints among those named.  An endpoint named but not there
    (deleted or disabled since the route was saved) is skipped and logged.
    """
    grants = Grants(slots)
    targets: dict[str, Target] = {}
    planned: list[PlannedDelivery] = []
    for item in wanted:
        event = item.event
        body = bodies.get(item.index)
        if body is None or not isinstance(event, events.InboundMessage):
            continue
        for endpoint_id in dict.fromkeys(event.endpoints):
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                log.warning("%s %s of route %s: webhook endpoint %s is disabled or deleted; skipped",
                            item.name, event.message, event.route, endpoint_id)
                continue
            target = None
            if endpoint.ready and grants.take(endpoint.id):
                target = targets.get(endpoint.id)
                if target is None:
                    target = targets[endpoint.id] = endpoint_target(endpoint)
            planned.append(PlannedDelivery(item, endpoint.url, endpoint.id, body, target, ready=endpoint.ready))
    return planned
