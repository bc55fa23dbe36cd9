"""Inbound routes: which recipients the MX door accepts and what happens to their mail.

CONTRACT (filled in by the routes work; other code imports these names as they are):
``RouteTable(routes)`` built from the enabled ``inbound_routes`` rows (``load(db)``);
at RCPT the door asks ``table.for_recipient(address)`` (the routes whose
recipient criterion matches, by priority, with the plus-tag and regex captures)
and refuses the recipient with ``550 5.1.1`` when it is empty; at DATA it asks
``decide(matches, message_headers, auth)`` for the routes whose header and
authentication criteria hold too, cut after the first route with a ``stop``
action.  ``RouteCache`` keeps a replica's table fresh without a query per RCPT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ActionType = Literal["webhook", "hold", "reject", "stop"]


@dataclass(frozen=True)
class Action:
    type: ActionType
    endpoints: tuple[str, ...] = ()  # webhook: /v1/webhooks endpoint ids
    payload: Literal["json", "raw"] = "json"  # webhook: the body's form
    sync: bool = False  # webhook: ask the endpoint during the SMTP transaction
    message: str | None = None  # reject: the SMTP reply text


@dataclass(frozen=True)
class Route:
    id: str
    name: str
    priority: int
    account: str | None
    actions: tuple[Action, ...]
    max_size: int | None = None


@dataclass(frozen=True)
class RecipientMatch:
    route: Route
    address: str  # the envelope recipient as given
    tag: str | None = None  # "1234" of support+1234@...
    captures: dict[str, str] = field(default_factory=dict)  # a regex route's named (or numbered) groups
