"""Reading message content: the index says where a message is, imap-sync fetches it.

The api never opens IMAP itself; it asks any imap-sync replica over RabbitMQ
(request/reply) for the raw source and decodes it here.
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, not_found
from mailgate_common import content, events
from mailgate_common.bus import Bus
from mailgate_common.db.models import IndexedMessage


async def indexed(session: AsyncSession, account: str, message: str) -> IndexedMessage | None:
    row: IndexedMessage | None = await session.scalar(
        select(IndexedMessage).where(IndexedMessage.id == message,
                                     IndexedMessage.account_id == account)
    )
    return row


async def fetch_raw(bus: Bus, account: str, message: str, wait: float, field: str) -> bytes:
    """The message source from imap-sync; ApiError 404 / 413 / 502 / 504 naming ``field``.

    imap-sync refuses a message over ``imap_fetch_max_bytes`` (413): a broker
    message that large could not carry it anyway.
    """
    try:
        reply = await bus.request(events.ImapFetch(account=account, message=message), wait)
    except TimeoutError as exc:
        raise ApiError(504, "The mail server did not answer in time", field, code="Timeout") from exc
    if reply.status == 404:
        raise ApiError(404, "Message not found on the mail server", field, code="MessageNotFound")
    if reply.status == 413:
        raise ApiError(413, f"Message too large to read through the API: {reply.body.decode(errors='replace')}",
                       field, code="MessageTooLarge")
    if reply.status != 200:
        raise ApiError(502, f"Could not fetch the message: {reply.body.decode(errors='replace')}",
                       field, code="IMAPCommandFailed")
    return reply.body


def message_json(row: IndexedMessage, raw: bytes) -> dict[str, Any]:
    """EmailEngine's message object: decoded content plus what the index knows."""
    decoded = content.message_json(raw, row.id)
    flags = list(row.flags)
    return {
        "id": row.id,
        "uid": row.uid,
        "path": row.path,
        "size": row.size,
        "internalDate": events.iso(row.internal_date),
        "flags": flags,
        "unseen": "\\Seen" not in flags,
        "flagged": "\\Flagged" in flags,
        "answered": "\\Answered" in flags,
        "draft": "\\Draft" in flags,
        **decoded,
        "date": decoded["date"] or events.iso(row.date),
    }


def attachment(raw: bytes, section: str) -> content.AttachmentData:
    found = content.attachment(raw, section)
    if found is None:
        raise not_found("Attachment", "attachment")
    return found


TEXT_TYPES = ("plain", "html", "*")
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


def text_message(text_id: str) -> str | None:
    """The message id inside a text id (``content.part_id(message, "text")``), None if it is not one."""
    try:
        decoded = base64.urlsafe_b64decode(text_id + "=" * (-len(text_id) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    message, sep, section = decoded.rpartition("/")
    return message if sep and message and section == "text" else None


def _cut(value: str, max_bytes: int) -> tuple[str, bool]:
    encoded = value.encode()
    if len(encoded) <= max_bytes:
        return value, False
    return encoded[:max_bytes].decode(errors="ignore"), True


def texts(plain: str | None, html: str | None, text_type: str, max_bytes: int) -> dict[str, Any]:
    """EmailEngine's ``{plain, html, hasMore}``: the asked kinds, each cut at ``max_bytes``."""
    out: dict[str, Any] = {}
    more = False
    for kind, value in (("plain", plain), ("html", html)):
        if value is not None and text_type in (kind, "*"):
            out[kind], cut = _cut(value, max_bytes)
            more = more or cut
    out["hasMore"] = more
    return out


def with_texts(body: dict[str, Any], text_type: str | None, max_bytes: int | None) -> dict[str, Any]:
    """The message JSON with its ``text`` narrowed to ``textType`` and cut at ``maxBytes``."""
    if text_type is None and max_bytes is None:
        return body
    text = dict(body["text"])
    chosen = texts(text.pop("plain", None), text.pop("html", None), text_type or "*",
                   DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
    return {**body, "text": {**text, **chosen}}
