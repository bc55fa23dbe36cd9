"""Request bodies of the mailbox operations, with EmailEngine's field names.

Strict like EmailEngine's schemas: a key they do not know is refused (400
naming it), never dropped.  A list field also takes a single value, as Joi's
``.single()`` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from mailgate_common.submission import Address, Attachment, Dsn, EnvelopeIn

Flag = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Flags = list[Flag] | Flag
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
FolderName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
SearchText = Annotated[str, msgspec.Meta(max_length=2560)]
Size = Annotated[int, msgspec.Meta(ge=0, le=1024 * 1024 * 1024)]


class _Strict(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    pass


class FlagOps(_Strict):
    add: Flags | None = None
    delete: Flags | None = None
    set: Flags | None = None


class MessageUpdate(_Strict):
    flags: FlagOps | None = None
    labels: FlagOps | None = None


class LabelFilter(_Strict):
    has: Flags | None = None
    not_: Flags | None = msgspec.field(name="not", default=None)


class SearchQuery(_Strict):
    """EmailEngine's ``search`` object; imap-sync compiles it to UID SEARCH."""

    seq: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    answered: bool | None = None
    deleted: bool | None = None
    draft: bool | None = None
    unseen: bool | None = None
    flagged: bool | None = None
    seen: bool | None = None
    from_: SearchText | None = msgspec.field(name="from", default=None)
    to: SearchText | None = None
    cc: SearchText | None = None
    bcc: SearchText | None = None
    body: SearchText | None = None
    subject: SearchText | None = None
    larger: Size | None = None
    smaller: Size | None = None
    uid: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    modseq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    before: str | None = None
    since: str | None = None
    sent_before: str | None = None
    sent_since: str | None = None
    email_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    thread_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    header: dict[str, SearchText | bool] | None = None
    gmail_raw: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    labels: LabelFilter | None = None
    email_ids: list[Annotated[str, msgspec.Meta(max_length=256)]] | str | None = None


def search_args(search: SearchQuery) -> dict[str, Any]:
    """The search as imap-sync takes it: EmailEngine's keys, unset ones left out."""
    args: dict[str, Any] = msgspec.to_builtins(search)
    return args


class SearchRequest(_Strict):
    search: SearchQuery
    # EmailEngine's Elasticsearch query: mailgate has no document store.
    document_query: dict[str, Any] | None = None


class BulkUpdate(_Strict):
    search: SearchQuery
    update: MessageUpdate


class MoveRequest(_Strict):
    path: Path
    source: Path | None = None  # Gmail API only in EmailEngine


class BulkMove(_Strict):
    search: SearchQuery
    path: Path


class BulkDelete(_Strict):
    search: SearchQuery


class MailboxCreate(_Strict):
    path: list[FolderName] | FolderName


class MailboxRename(_Strict):
    path: Path
    new_path: list[FolderName] | FolderName | None = None
    subscribed: bool | None = None


class MessageUpload(_Strict):
    """``POST /v1/account/{account}/message``: ``raw`` or the structured fields."""

    path: Path
    flags: list[Flag] = msgspec.field(default_factory=list)
    internal_date: datetime | None = None
    reference: Any = None
    raw: str | None = None
    from_: Address | None = msgspec.field(name="from", default=None)
    to: list[Address] | Address | None = None
    cc: list[Address] | Address | None = None
    bcc: list[Address] | Address | None = None
    subject: Annotated[str, msgspec.Meta(max_length=10 * 1024)] | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    message_id: Annotated[str, msgspec.Meta(max_length=996)] | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # Only templates use these in EmailEngine; an upload has none, so they change nothing.
    locale: str | None = None
    tz: str | None = None


class DraftSubmit(_Strict):
    """``POST /v1/account/{account}/message/{message}/submit``: overrides for sending a stored draft."""

    envelope: EnvelopeIn | None = None
    copy: bool | None = None
    sent_mail_path: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    send_at: datetime | None = None
    delivery_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    gateway: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    dsn: Dsn | None = None
    proxy: Any = None
    local_address: Any = None
