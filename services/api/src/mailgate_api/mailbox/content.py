"""Reading message content: the index says where a message is, imap-sync fetches it.

The api never opens IMAP itself; it asks any imap-sync replica over RabbitMQ
(request/reply) for the raw source and decodes it here.
"""

from __future__ import annotations

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
        raise ApiError(504, "The mail server did not answer in time", field) from exc
    if reply.status == 404:
        raise ApiError(404, "Message not found on the mail server", field)
    if reply.status == 413:
        raise ApiError(413, f"Message too large to read through the API: {reply.body.decode(errors='replace')}",
                       field)
    if reply.status != 200:
        raise ApiError(502, f"Could not fetch the message: {reply.body.decode(errors='replace')}",
                       field)
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
