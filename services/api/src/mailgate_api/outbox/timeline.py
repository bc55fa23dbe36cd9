"""A message's whole story, oldest first: queued, every delivery attempt with the
server's answer, the outcome, what came back later (bounces, complaints), and
every webhook call made about it.

Each source is one small function reading one table; the timeline merges them.
Webhook URLs often carry secrets (``hooks.slack.com/services/…``, ``?token=``)
and may belong to the operator, not the account: only an admin sees them; an
account token sees the endpoint id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common import events, lifecycle
from mailgate_common.db.models import Bounce, DeliveryAttempt, OutboxMessage, WebhookAttempt, WebhookDelivery


class Step(msgspec.Struct, kw_only=True, omit_defaults=True):
    at: str
    # queued | sent | deferred | failed | throttled | cancelled | bounce | complaint | webhook
    step: str
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


Source = Callable[[AsyncSession, OutboxMessage, bool], Awaitable[list[tuple[datetime, Step]]]]


def _step(at: datetime, step: str, **detail: Any) -> tuple[datetime, Step]:
    return at, Step(at=events.iso(at) or "", step=step,
                    detail={k: v for k, v in detail.items() if v is not None})


async def _lifecycle(session: AsyncSession, row: OutboxMessage, admin: bool) -> list[tuple[datetime, Step]]:
    steps = [_step(row.created_at, "queued", source=row.source, scheduled=events.iso(row.send_at),
                   messageId=row.message_id)]
    if row.state == lifecycle.CANCELLED and row.finished_at:
        steps.append(_step(row.finished_at, "cancelled"))
    return steps


async def _attempts(session: AsyncSession, row: OutboxMessage, admin: bool) -> list[tuple[datetime, Step]]:
    attempts = await session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.queue_id == row.id).order_by(DeliveryAttempt.id)
    )
    return [
        _step(a.finished_at, a.outcome, attempt=a.attempt, server=a.server, smtpResponseCode=a.smtp_code,
              smtpStatus=a.smtp_status, response=a.response, error=a.error, authenticated=a.authenticated)
        for a in attempts
    ]


async def _webhooks(session: AsyncSession, row: OutboxMessage, admin: bool) -> list[tuple[datetime, Step]]:
    rows = await session.execute(
        select(WebhookDelivery, WebhookAttempt)
        .outerjoin(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
        .where(WebhookDelivery.queue_id == row.id)
    )
    steps = []
    for delivery, attempt in rows.tuples():
        where = {"url": delivery.url} if admin else {}
        if attempt is None:
            steps.append(_step(delivery.created_at, "webhook", event=delivery.event, **where,
                               endpointId=delivery.endpoint_id, state=delivery.state, deliveryId=delivery.id))
        else:
            # An error may quote the URL ("refused: host resolves to ..."): admins only too.
            steps.append(_step(attempt.started_at, "webhook", event=delivery.event, **where,
                               endpointId=delivery.endpoint_id, attempt=attempt.attempt,
                               status=attempt.status_code, error=attempt.error if admin else None,
                               deliveryId=delivery.id))
    return steps


async def _bounces(session: AsyncSession, row: OutboxMessage, admin: bool) -> list[tuple[datetime, Step]]:
    rows = await session.scalars(select(Bounce).where(Bounce.queue_id == row.id).order_by(Bounce.id))
    return [
        _step(b.created_at, b.kind, recipient=b.recipient, action=b.action, status=b.status,
              reason=b.reason, hard=b.hard, diagnostic=b.diagnostic, mta=b.mta,
              feedbackType=b.feedback_type, bounceMessage=b.bounce_message, verified=b.verified)
        for b in rows
    ]


SOURCES: list[Source] = [_lifecycle, _attempts, _webhooks, _bounces]


async def timeline(session: AsyncSession, row: OutboxMessage, admin: bool) -> list[Step]:
    """``admin``: the caller may see webhook URLs and their errors."""
    merged: list[tuple[datetime, Step]] = []
    for source in SOURCES:
        merged.extend(await source(session, row, admin))
    merged.sort(key=lambda pair: pair[0])
    return [step for _, step in merged]
