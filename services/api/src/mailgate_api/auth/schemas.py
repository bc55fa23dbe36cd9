from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

import msgspec

from mailgate_api.errors import ApiError

Scope = Annotated[str, msgspec.Meta(max_length=16)]
Description = Annotated[str, msgspec.Meta(max_length=1024)]


class RateLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    max_requests: int
    time_window: int


class Restrictions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    referrers: list[str] | str | None = None
    addresses: list[str] | str | None = None
    # Accepted by the schema so the refusal can name it (see check_restrictions).
    rate_limit: RateLimit | None = msgspec.field(name="rateLimit", default=None)


class TokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # None: an admin token for every account.
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    description: Description | None = None
    scopes: Annotated[list[Scope], msgspec.Meta(max_length=3)] | Scope = msgspec.field(
        default_factory=lambda: ["api"]
    )
    metadata: Annotated[str, msgspec.Meta(max_length=1024 * 1024)] | None = None
    restrictions: Restrictions | None = None
    ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    # EmailEngine fields mailgate cannot honour: named in a 400, never dropped.
    permissions: Any = msgspec.UNSET
    expires: Any = msgspec.UNSET

    def scope_list(self) -> list[str]:
        return [self.scopes] if isinstance(self.scopes, str) else list(dict.fromkeys(self.scopes))


def _as_list(value: list[str] | str | None) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    return [v for v in items or [] if v] or None


def check_create(data: TokenCreate, strict: bool) -> dict[str, Any] | None:
    """Validate the EmailEngine token fields; returns the restrictions to store.

    ``strict`` (the current ``POST /v1/tokens``) requires ``description`` as
    EmailEngine does; the deprecated ``POST /v1/token`` keeps accepting none.
    """
    for name in ("permissions", "expires"):
        if getattr(data, name) is not msgspec.UNSET:
            raise ApiError(400, f"{name}: not supported by mailgate (tokens are narrowed by account "
                           "and scopes)", name)
    if strict and not (data.description or "").strip():
        raise ApiError(400, "description: is required", "description")
    if data.metadata:
        try:
            json.loads(data.metadata)
        except ValueError:
            raise ApiError(400, "metadata: must be a valid JSON string", "metadata") from None
    if data.ip:
        try:
            ipaddress.ip_address(data.ip.strip())
        except ValueError:
            raise ApiError(400, "ip: must be an IP address", "ip") from None
    if data.restrictions is None:
        return None
    if data.restrictions.rate_limit is not None:
        raise ApiError(400, "restrictions.rateLimit: not supported by mailgate",
                       "restrictions.rateLimit")
    addresses = _as_list(data.restrictions.addresses)
    for address in addresses or []:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ApiError(400, f"restrictions.addresses: {address!r} is not an IP address or range",
                           "restrictions.addresses") from None
    stored = {"referrers": _as_list(data.restrictions.referrers), "addresses": addresses}
    return {k: v for k, v in stored.items() if v} or None


class TokenCreated(msgspec.Struct, omit_defaults=True):
    token: str
    id: str | None = None


class TokenAccess(msgspec.Struct):
    time: str | None


class TokenView(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    account: str | None = None
    description: str | None = None
    scopes: list[str]
    metadata: str | None = None
    restrictions: dict[str, Any] | None = None
    ip: str | None = None
    created: str | None = None
    access: TokenAccess | None = None
    # mailgate's older name for access.time, kept for existing clients.
    last_used: str | None = None


class TokenList(msgspec.Struct, omit_defaults=True):
    tokens: list[TokenView]
    total: int | None = None
    page: int | None = None
    pages: int | None = None


class TokenDeleted(msgspec.Struct):
    deleted: bool
