"""Suppression list for the API: validation, views, and the check REST submit runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.accounts.service import get_account
from mailgate_api.errors import ApiError, not_found
from mailgate_api.suppression.schemas import SuppressionIn, SuppressionView
from mailgate_common import events, suppression
from mailgate_common.mime import InvalidMessage, normalize_address
from mailgate_common.outbox import NewMessage


def view(entry: suppression.Entry) -> SuppressionView:
    return SuppressionView(
        address=entry.address,
        reason=entry.reason,
        source=entry.source,
        account=entry.account,
        created=events.iso(entry.created) if entry.created else None,
        details=entry.details,
    )


def valid_address(address: str) -> str:
    try:
        return normalize_address("address", address)
    except InvalidMessage as exc:
        raise ApiError(400, exc.message, exc.field) from exc


async def check_account(session: AsyncSession, account: str | None) -> None:
    if account is not None:
        await get_account(session, account)  # 404 for an unknown account


async def add(session: AsyncSession, account: str | None, data: SuppressionIn) -> SuppressionView:
    await check_account(session, account)
    address = valid_address(data.address)
    reason = data.reason.strip() or "added manually"
    return view(await suppression.add(session, account, address, reason, "manual"))


async def remove(session: AsyncSession, account: str | None, address: str) -> None:
    await check_account(session, account)
    if not await suppression.remove(session, account, address):
        raise not_found("Suppression entry", "address")


def screen(new: NewMessage, blocked: dict[str, str], skip_suppressed: bool) -> None:
    """Refuse a submit that would mail a suppressed recipient, or drop just those recipients.

    Runs on the envelope (To, Cc and Bcc alike) because that is who would be mailed.
    """
    details = [
        {"field": "to", "address": address, "reason": reason, "message": f"{address} is suppressed ({reason})"}
        for address, reason in blocked.items()
    ]
    remaining = [a for a in new.envelope_to if a not in blocked]
    if skip_suppressed and remaining:
        new.envelope_to = remaining
        return
    listed = ", ".join(f"{a} ({r})" for a, r in blocked.items())
    message = f"suppressed recipients: {listed}"
    if skip_suppressed:
        message = f"no recipients left after skipping {message}"
    raise ApiError(422, message, "to", details, code="RecipientSuppressed")
