from __future__ import annotations

import re

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import not_found
from mailgate_api.outbox.schemas import AttemptView, EnvelopeView, OutboxEntry, Progress, ProgressError
from mailgate_api.outbox.timeline import timeline
from mailgate_common import events, lifecycle
from mailgate_common.db.models import DeliveryAttempt, OutboxMessage

PENDING = (lifecycle.QUEUED, lifecycle.DEFERRED, lifecycle.SENDING)


def entry(row: OutboxMessage, attempts: list[DeliveryAttempt] | None = None) -> OutboxEntry:
    pending = row.state in (lifecycle.QUEUED, lifecycle.DEFERRED)
    return OutboxEntry(
        queue_id=row.id,
        account=row.account_id,
        source=row.source,
        message_id=row.message_id,
        envelope=EnvelopeView(from_=row.envelope_from, to=list(row.envelope_to)),
        subject=row.subject,
        state=row.state,
        created=events.iso(row.created_at),
        scheduled=events.iso(row.send_at),
        next_attempt=events.iso(row.next_attempt_at) if pending else None,
        attempts_made=row.attempts_made,
        attempts=row.max_attempts,
        progress=progress(row),
        gateway=(row.options or {}).get("gateway"),
        idempotency_key=row.idempotency_key,
        last_error=row.last_error,
        smtp_response=row.smtp_response,
        attempts_log=None
        if attempts is None
        else [
            AttemptView(
                attempt=a.attempt,
                outcome=a.outcome,
                started=events.iso(a.started_at),
                finished=events.iso(a.finished_at),
                server=a.server,
                smtp_response_code=a.smtp_code,
                smtp_status=a.smtp_status,
                response=a.response,
                error=a.error,
                authenticated=a.authenticated,
            )
            for a in attempts
        ],
    )


_SMTP_CODE = re.compile(r"^\s*([2-5]\d\d)\b")


def progress(row: OutboxMessage) -> Progress:
    """The row's state in EmailEngine's words; its own ``state`` says it more precisely."""
    if row.state == lifecycle.SENT:
        return Progress(status="submitted", response=row.smtp_response)
    if row.state == lifecycle.SENDING:
        return Progress(status="processing")
    if row.state == lifecycle.QUEUED:
        return Progress(status="queued")
    if row.state == lifecycle.CANCELLED:
        return Progress(status="error", error=ProgressError(message="Cancelled"))
    if row.last_error is None and row.smtp_response is None:
        return Progress(status="queued")
    code = _SMTP_CODE.match(row.smtp_response or "")
    return Progress(status="error", error=ProgressError(
        message=row.last_error or row.smtp_response or "", status_code=int(code.group(1)) if code else None))


async def list_entries(
    session: AsyncSession, page: int, page_size: int, account: str | None, state: str | None
) -> tuple[list[OutboxMessage], int]:
    conditions = []
    if account:
        conditions.append(OutboxMessage.account_id == account)
    if state == "all":
        pass
    elif state:
        conditions.append(OutboxMessage.state == state)
    else:
        conditions.append(OutboxMessage.state.in_(PENDING))
    total = await session.scalar(select(func.count()).select_from(OutboxMessage).where(*conditions)) or 0
    rows = await session.scalars(
        select(OutboxMessage)
        .where(*conditions)
        .order_by(OutboxMessage.created_at.desc())
        .offset(page * page_size)
        .limit(page_size)
    )
    return list(rows), total


async def get_row(session: AsyncSession, queue_id: str) -> OutboxMessage:
    row = await session.get(OutboxMessage, queue_id)
    if row is None:
        raise not_found("Queued message", "queueId")
    return row


async def get_entry(session: AsyncSession, queue_id: str, admin: bool) -> OutboxEntry:
    row = await get_row(session, queue_id)
    attempts = await session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.queue_id == queue_id).order_by(DeliveryAttempt.id)
    )
    view = entry(row, list(attempts))
    view.timeline = await timeline(session, row, admin)
    return view


async def cancel(session: AsyncSession, queue_id: str) -> bool:
    """Cancel a message still waiting; False (as EmailEngine's ``deleted: false``) when
    there is no such message or it was already sent, failed or cancelled."""
    cancelled = await session.scalar(
        update(OutboxMessage)
        .where(OutboxMessage.id == queue_id, OutboxMessage.state.in_(lifecycle.CANCEL.from_states))
        .values(state=lifecycle.CANCEL.to_state, finished_at=events.utcnow())
        .returning(OutboxMessage.id)
    )
    return cancelled is not None
