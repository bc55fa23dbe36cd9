"""EmailEngine's blocklist shapes (lib/api-routes/blocklist-routes.js)."""

from __future__ import annotations

from typing import Annotated

import msgspec


class BlocklistSummary(msgspec.Struct, kw_only=True, rename="camel"):
    list_id: str
    count: int


class BlocklistsPage(msgspec.Struct, kw_only=True):
    total: int
    page: int
    pages: int
    blocklists: list[BlocklistSummary]


class BlocklistAddress(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    # EmailEngine stores each entry as JSON and leaves out what it does not know.
    recipient: str
    account: str | None = None
    message_id: str | None = None
    source: str | None = None
    reason: str | None = None
    remote_address: str | None = None
    user_agent: str | None = None
    created: str | None = None


class BlocklistPage(msgspec.Struct, kw_only=True, rename="camel"):
    list_id: str
    total: int
    page: int
    pages: int
    addresses: list[BlocklistAddress]


class BlocklistAdd(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    recipient: Annotated[str, msgspec.Meta(max_length=320)]
    reason: Annotated[str, msgspec.Meta(max_length=256)] = "block"


class BlocklistAdded(msgspec.Struct, kw_only=True):
    success: bool
    added: bool


class BlocklistDeleted(msgspec.Struct, kw_only=True):
    deleted: bool
