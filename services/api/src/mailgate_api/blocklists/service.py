"""Blocklists for the API: input checks and EmailEngine's entry view."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.accounts.service import get_account
from mailgate_api.blocklists.schemas import BlocklistAdd, BlocklistAddress
from mailgate_api.errors import ApiError, invalid
from mailgate_common import blocklist, events
from mailgate_common.mime import InvalidMessage, normalize_address


def valid_list_id(list_id: str) -> str:
    if not blocklist.is_list_id(list_id):
        raise invalid("listId", "must be a host name, such as newsletter.example.com "
                                f"(letters, digits, hyphens and dots, at most {blocklist.LIST_ID_MAX} characters)")
    return list_id


def valid_recipient(recipient: str | None) -> str:
    if recipient is None or not recipient.strip():
        raise invalid("recipient", "is required")
    try:
        return normalize_address("recipient", recipient)
    except InvalidMessage as exc:
        raise ApiError(400, exc.message, exc.field) from exc


def not_found() -> ApiError:
    return ApiError(404, "Requested blocklist was not found", "listId", code="NotFound")


def view(entry: blocklist.Entry) -> BlocklistAddress:
    return BlocklistAddress(
        recipient=entry.address, account=entry.account, message_id=entry.message_id, source=entry.source,
        reason=entry.reason, remote_address=entry.remote_address, user_agent=entry.user_agent,
        created=events.iso(entry.created),
    )


async def add(session: AsyncSession, list_id: str, data: BlocklistAdd) -> bool:
    """Block the recipient (source "api"); like EmailEngine, no listUnsubscribe is sent for it."""
    recipient = valid_recipient(data.recipient)
    await get_account(session, data.account)  # 404 for an unknown account
    return await blocklist.add(session, list_id, recipient, account=data.account,
                               reason=data.reason.strip() or "block", source="api")
