"""Request and response bodies of webhook endpoints and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

# Up to a week: long enough for any subscriber's deploy, short enough that a
# leaked old secret does not sign for long.
OverlapSeconds = Annotated[int, msgspec.Meta(ge=0, le=7 * 86400)]


class EndpointCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    url: str
    # Set: the endpoint only ever sees this account's events.
    account: str | None = None
    description: str | None = None
    events: list[str] = msgspec.field(default_factory=lambda: ["*"])
    # Only events of these accounts (none or empty: every account).
    accounts: list[str] | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    enabled: bool = True
    # Opens and clicks flagged as machine-made (Apple MPP, link scanners...) are not sent here.
    exclude_machine: bool = False


class EndpointUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Fields left out stay as they are."""

    url: str | None = None
    description: str | None = None
    events: list[str] | None = None
    accounts: list[str] | None = None
    headers: dict[str, str] | None = None
    enabled: bool | None = None
    exclude_machine: bool | None = None


class EndpointView(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    url: str
    account: str | None
    description: str | None
    events: list[str]
    accounts: list[str] | None
    headers: dict[str, str]
    enabled: bool
    exclude_machine: bool
    # active | disabled | failing (backed off as a whole until backoffUntil)
    status: str
    consecutive_failures: int
    failing_since: str | None
    backoff_until: str | None
    previous_secret_expires: str | None
    created: str | None
    updated: str | None


class EndpointCreated(EndpointView, kw_only=True):
    # Shown once: only a sealed copy is stored.
    secret: str


class EndpointList(msgspec.Struct):
    webhooks: list[EndpointView]
    total: int
    page: int
    pages: int


class EndpointDeleted(msgspec.Struct):
    deleted: bool


class RotateSecret(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    # During the overlap both secrets sign every call, so receivers can switch at leisure.
    overlap_seconds: OverlapSeconds = 86400


class SecretRotated(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    secret: str
    previous_secret_expires: str | None


class DeliveryView(msgspec.Struct, kw_only=True, rename="camel"):
    id: int
    webhook: str | None  # endpoint id; null for the settings/account URL
    url: str
    event: str
    event_id: str  # also the webhook-id header: stable across retries and replays
    account: str | None
    queue_id: str | None
    status: str
    attempts: int
    status_code: int | None
    last_error: str | None
    response_body: str | None
    created: str | None
    next_attempt: str | None
    delivered: str | None


class DeliveryList(msgspec.Struct):
    deliveries: list[DeliveryView]
    total: int
    page: int
    pages: int


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    since: datetime | None = None
    status: Literal["failed", "delivered", "all"] = "failed"


class Replayed(msgspec.Struct):
    replayed: int
