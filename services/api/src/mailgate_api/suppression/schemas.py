from __future__ import annotations

from typing import Annotated, Any

import msgspec


class SuppressionIn(msgspec.Struct, kw_only=True):
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = "added manually"


class SuppressionView(msgspec.Struct, kw_only=True, omit_defaults=True):
    address: str
    reason: str
    source: str
    # None: applies to every account.
    account: str | None = None
    created: str | None = None
    # For bounces and complaints: queueId, messageId, status, diagnostic.
    details: dict[str, Any] | None = None


class SuppressionList(msgspec.Struct):
    suppressions: list[SuppressionView]
    total: int
    page: int
    pages: int


class SuppressionDeleted(msgspec.Struct):
    deleted: bool
