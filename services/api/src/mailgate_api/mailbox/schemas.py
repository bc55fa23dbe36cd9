from __future__ import annotations

from typing import Any

import msgspec


class MailboxEntry(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    path: str
    name: str
    delimiter: str | None = None
    special_use: str | None = None
    messages: int | None = None
    uid_next: int | None = None
    uid_validity: str | None = None
    synced: bool = False


class MailboxList(msgspec.Struct):
    mailboxes: list[MailboxEntry]


class MessageEntry(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    uid: int
    path: str
    message_id: str | None
    subject: str | None
    from_: dict[str, Any] | None = msgspec.field(name="from")
    to: list[dict[str, Any]]
    cc: list[dict[str, Any]]
    date: str | None
    internal_date: str | None
    flags: list[str]
    unseen: bool
    flagged: bool
    answered: bool
    size: int | None
    in_reply_to: str | None


class MessageList(msgspec.Struct):
    total: int
    page: int
    pages: int
    messages: list[MessageEntry]
