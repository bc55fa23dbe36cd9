from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[\w.@+-]+$")]


class Auth(msgspec.Struct, kw_only=True, rename="camel"):
    user: str
    pass_: str | None = msgspec.field(name="pass", default=None)
    access_token: str | None = None


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    secure: bool = False
    auth: Auth | None = None
    tls: dict[str, Any] | None = None
    disabled: bool | None = None


Positive = Annotated[int, msgspec.Meta(ge=1)]

# EmailEngine's account ``path``: folders to watch, one path or a list; special-use
# references ("\\Sent") and "*" (every folder) allowed; null or "" unsets it.
FolderPath = Annotated[str, msgspec.Meta(max_length=1024)]
WatchPaths = FolderPath | list[FolderPath] | None | msgspec.UnsetType


class SendLimits(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Messages per window and concurrent SMTP connections (per sender replica)."""

    per_second: Positive | None = None
    per_minute: Positive | None = None
    per_hour: Positive | None = None
    per_day: Positive | None = None
    connections: Positive | None = None


class AccountCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    account: AccountId | None = None
    name: str | None = None
    email: str | None = None
    imap: ServerSettings | Literal[False] | None = None
    smtp: ServerSettings | None = None
    copy: bool | None = None
    webhooks: str | None = None
    limits: SendLimits | None = None
    path: WatchPaths = msgspec.UNSET
    # mailgate's own: when the connection drops after a whole message was written,
    # send it again (it may then arrive twice) instead of ending in state "unknown".
    retry_unknown_outcome: bool | None = msgspec.field(name="retryUnknownOutcome", default=None)


class AccountUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    name: str | None = None
    email: str | None = None
    imap: ServerSettings | Literal[False] | None = None
    smtp: ServerSettings | None = None
    copy: bool | None = None
    webhooks: str | None = None
    limits: SendLimits | None = None
    path: WatchPaths = msgspec.UNSET
    retry_unknown_outcome: bool | None = msgspec.field(name="retryUnknownOutcome", default=None)


class AccountCreated(msgspec.Struct):
    account: str
    state: str


class AccountRef(msgspec.Struct):
    account: str


class AccountDeleted(msgspec.Struct):
    account: str
    deleted: bool


class AccountView(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    account: str
    name: str | None = None
    email: str | None = None
    state: str
    copy: bool | None = None
    webhooks: str | None = None
    imap: dict[str, Any] | bool | None = None
    path: list[str] | None = None
    smtp: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    throttled_until: str | None = None
    retry_unknown_outcome: bool | None = None
    created: str | None = None


class AccountList(msgspec.Struct):
    accounts: list[AccountView]
    total: int
    page: int
    pages: int
