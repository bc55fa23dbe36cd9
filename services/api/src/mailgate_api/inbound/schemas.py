"""Request and response bodies of /v1/inbound (routes and received messages).

``match`` and ``actions`` arrive as plain JSON: the route engine
(``mailgate_common.inbound.routes``) validates them, so its error names the exact
field (``match.recipientRegex``, ``actions[1].endpoints[0]``) and the API and the
MX door can never disagree on what a route means.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Description = Annotated[str, msgspec.Meta(max_length=1024)]
AccountId = Annotated[str, msgspec.Meta(max_length=256)]
Priority = Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
MaxSize = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class RouteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: Name
    match: dict[str, Any]
    actions: list[Any]
    description: Description | None = None
    enabled: bool = True
    priority: Priority = 100
    # None: the operator's route; an account token's route is always its account's.
    account: AccountId | None = None
    max_size: MaxSize | None = None


class RouteUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Fields left out stay; ``match`` and ``actions`` are replaced as a whole."""

    name: Name | None = None
    match: dict[str, Any] | None = None
    actions: list[Any] | None = None
    description: Description | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | None = None
    priority: Priority | None = None
    max_size: MaxSize | msgspec.UnsetType | None = msgspec.UNSET


class RouteView(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    name: str
    description: str | None
    enabled: bool
    priority: int
    account: str | None
    match: dict[str, Any]
    actions: list[dict[str, Any]]
    max_size: int | None
    created: str | None
    updated: str | None
    # Advice about the route as saved ("catch-all routes attract spam").
    warnings: list[str] = msgspec.field(default_factory=list)


class RouteList(msgspec.Struct):
    routes: list[RouteView]
    total: int
    page: int
    pages: int


class RouteDeleted(msgspec.Struct):
    deleted: bool
    id: str


class AuthVerdicts(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Verdicts to test a route's ``match.auth`` against (what the MX door would compute)."""

    spf: str = "none"
    dkim: list[str] = msgspec.field(default_factory=list)
    dmarc: str = "none"


class RouteTest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    recipient: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    auth: AuthVerdicts | None = None


class TestedRoute(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    name: str
    priority: int
    enabled: bool
    tag: str | None
    captures: dict[str, str]
    headers_match: bool
    # None: the route has authentication criteria and no verdicts were given.
    auth_match: bool | None
    # True: the route takes the message; False: it does not; None: it depends on the verdicts.
    takes: bool | None
    reason: str
    actions: list[str]


class RouteTestResult(msgspec.Struct, kw_only=True, rename="camel"):
    recipient: str
    # "accepted", or why RCPT TO is refused: "no route" (550 5.1.1) or "rejected" (a reject action)
    rcpt: str
    rcpt_reply: str | None
    route: TestedRoute | None  # this route's part in it (None: its recipient criterion does not match)
    routes: list[TestedRoute]  # every route the recipient matches, in the order they run
    hidden_routes: int  # matching routes of other accounts (an account token sees only its own)
    notes: list[str]


class MessageSummary(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    received_at: str | None
    mail_from: str
    rcpt_to: list[str]
    subject: str | None
    message_id: str | None
    size: int
    held: bool
    automated: str | None
    deliveries: list[dict[str, Any]]
    auth: dict[str, Any]


class MessageList(msgspec.Struct):
    messages: list[MessageSummary]
    total: int
    page: int
    pages: int


class MessageDeleted(msgspec.Struct):
    deleted: bool
    id: str


class Released(msgspec.Struct, kw_only=True):
    released: bool
    id: str
    # The inboundMessage events sent, one per route (and payload form) with webhook actions.
    events: list[dict[str, Any]]
