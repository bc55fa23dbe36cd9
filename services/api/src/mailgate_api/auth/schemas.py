from __future__ import annotations

from typing import Annotated

import msgspec

Scope = Annotated[str, msgspec.Meta(max_length=16)]


class TokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # None: an admin token for every account.
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    scopes: Annotated[list[Scope], msgspec.Meta(max_length=3)] = msgspec.field(
        default_factory=lambda: ["api"]
    )


class TokenCreated(msgspec.Struct):
    token: str


class TokenView(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    account: str | None
    description: str | None
    scopes: list[str]
    created: str | None
    last_used: str | None


class TokenList(msgspec.Struct):
    tokens: list[TokenView]


class TokenDeleted(msgspec.Struct):
    deleted: bool
