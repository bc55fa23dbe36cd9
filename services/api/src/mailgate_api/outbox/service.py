from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, not_found
from mailgate_api.outbox.schemas import AttemptView, EnvelopeView, OutboxEntry
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
            )
            for a in attempts
        ],
    )


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


async def cancel(session: AsyncSession, queue_id: str) -> None:
    cancelled = await session.scalar(
        update(OutboxMessage)
        .where(OutboxMessage.id == queue_id, OutboxMessage.state.in_(lifecycle.CANCEL.from_states))
        .values(state=lifecycle.CANCEL.to_state, finished_at=events.utcnow())
        .returning(OutboxMessage.id)
    )
    if cancelled is None:
        state = await session.scalar(select(OutboxMessage.state).where(OutboxMessage.id == queue_id))
        if state is None:
            raise not_found("Queued message", "queueId")
        raise ApiError(409, f"Message is already {state} and cannot be cancelled", "queueId")
