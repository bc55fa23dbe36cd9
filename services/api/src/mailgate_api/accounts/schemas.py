from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

AccountId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[\w.@+-]+$")]


class Auth(msgspec.Struct, kw_only=True, rename="camel"):
    user: str
    pass_: str | None = msgspec.field(name="pass", default=None)
    access_token: str | None = None


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    secure: bool = False
    auth: Auth | None = None
    tls: dict[str, Any] | None = None
    disabled: bool | None = None
    # EmailEngine's authentication server (OAuth2 tokens from elsewhere): refused by name.
    use_auth_server: Any = msgspec.UNSET


FolderName = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class ImapSettings(ServerSettings, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    sent_mail_path: FolderName | None = None
    drafts_mail_path: FolderName | None = None
    junk_mail_path: FolderName | None = None
    trash_mail_path: FolderName | None = None
    archive_mail_path: FolderName | None = None
    resync_delay: Annotated[int, msgspec.Meta(ge=0)] | None = None
    disable_imap4rev2: bool | None = msgspec.field(name="disableIMAP4rev2", default=None)


class SmtpSettings(ServerSettings, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    # nodemailer's forceAuth: log in even when the server does not offer AUTH.
    force_auth: bool | None = None


class WebhooksCustomHeader(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    value: Annotated[str, msgspec.Meta(max_length=10 * 1024)] = ""


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


class _AccountFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The EmailEngine account fields both create and update take."""

    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    email: str | None = None
    imap: ImapSettings | Literal[False] | None = None
    smtp: SmtpSettings | Literal[False] | None = None
    copy: bool | None = None
    webhooks: str | None = None
    limits: SendLimits | None = None
    path: WatchPaths = msgspec.UNSET
    # mailgate's own: when the connection drops after a whole message was written,
    # send it again (it may then arrive twice) instead of ending in state "unknown".
    retry_unknown_outcome: bool | None = msgspec.field(name="retryUnknownOutcome", default=None)
    # EmailEngine fields kept in Account.extra under their own names.
    logs: bool | None = None
    notify_from: str | None = msgspec.field(name="notifyFrom", default=None)
    sync_from: str | None = msgspec.field(name="syncFrom", default=None)
    smtp_ehlo_name: Annotated[str, msgspec.Meta(max_length=255)] | None = msgspec.field(
        name="smtpEhloName", default=None)
    subconnections: list[FolderName] | FolderName | None = None
    imap_indexer: Literal["full", "fast"] | None = msgspec.field(name="imapIndexer", default=None)
    locale: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    tz: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    webhooks_custom_headers: list[WebhooksCustomHeader] | None = msgspec.field(
        name="webhooksCustomHeaders", default=None)
    # EmailEngine fields mailgate cannot honour: named in a 400, never dropped.
    oauth2: Any = msgspec.UNSET
    proxy: Any = msgspec.UNSET
    expected_email: Any = msgspec.field(name="expectedEmail", default=msgspec.UNSET)


class AccountCreate(_AccountFields, kw_only=True, forbid_unknown_fields=True):
    account: AccountId | None = None


class AccountUpdate(_AccountFields, kw_only=True, forbid_unknown_fields=True):
    pass


class AccountCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """EmailEngine's bodies for reconnect / sync / flush: ``{"reconnect": true}`` etc."""

    reconnect: bool | None = None
    sync: bool | None = None
    flush: bool | None = None
    # flush only, as in EmailEngine: settings for the rebuilt index.
    notify_from: str | None = msgspec.field(name="notifyFrom", default=None)
    imap_indexer: Literal["full", "fast"] | None = msgspec.field(name="imapIndexer", default=None)
    sync_from: str | None = msgspec.field(name="syncFrom", default=None)


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
    type: str | None = None
    smtp_status: dict[str, Any] | None = None
    logs: bool | None = None
    notify_from: str | None = None
    sync_from: str | None = None
    smtp_ehlo_name: str | None = None
    subconnections: list[str] | None = None
    imap_indexer: str | None = None
    locale: str | None = None
    tz: str | None = None


class AccountList(msgspec.Struct):
    accounts: list[AccountView]
    total: int
    page: int
    pages: int
