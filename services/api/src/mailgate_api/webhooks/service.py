"""Webhook endpoints (validation, sealed secrets) and the delivery log queries."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, not_found
from mailgate_api.webhooks.schemas import DeliveryView, EndpointView
from mailgate_common import events, lifecycle, service_settings, urls
from mailgate_common.crypto import Sealer
from mailgate_common.db.models import Account, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from mailgate_common.events import WEBHOOK_EVENT_NAMES

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
# Headers mailgate sets itself (signatures, framing): a custom header must not forge them.
RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "transfer-encoding", "host", "connection",
    "webhook-id", "webhook-timestamp", "webhook-signature", "x-ee-wh-signature",
    "x-mailgate-event-id",
})
DELIVERY_STATES = lifecycle.WEBHOOK_STATES


def new_endpoint_id() -> str:
    return "wh_" + secrets.token_hex(8)


def new_secret() -> str:
    return service_settings.new_service_secret()


async def check_url(url: str, allow_private: bool, field: str = "url") -> str:
    try:
        await urls.check_url(url, allow_private)
    except urls.UnsafeUrl as exc:
        raise ApiError(400, f"{field}: {exc}", field) from None
    return url


def check_events(names: list[str]) -> list[str]:
    unknown = [e for e in names if e != "*" and e not in WEBHOOK_EVENT_NAMES]
    if unknown:
        raise ApiError(400, f"events: unknown event names: {', '.join(unknown)}", "events")
    if not names:
        raise ApiError(400, 'events: list at least one event name, or "*"', "events")
    return sorted(set(names))


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ApiError(400, f"headers: {name!r} is not a valid header name", "headers")
        if name.lower() in RESERVED_HEADERS:
            raise ApiError(400, f"headers: {name} is set by mailgate and cannot be overridden", "headers")
        if any(c in value for c in "\r\n\0") or len(value) > 4096:
            raise ApiError(400, f"headers: the value of {name} is not a valid header value", "headers")
    return dict(headers)


async def check_account(session: AsyncSession, account: str, field: str) -> None:
    if await session.get(Account, account) is None:
        raise ApiError(400, f"{field}: no account {account!r}", field)


def seal(sealer: Sealer, secret: str) -> bytes:
    return sealer.seal({"secret": secret})


def status_of(row: WebhookEndpoint) -> str:
    if not row.enabled:
        return "disabled"
    return "failing" if row.failing_since is not None else "active"


def view(row: WebhookEndpoint) -> dict[str, Any]:
    """Fields of an EndpointView (a dict so EndpointCreated can add the secret)."""
    expires = row.previous_secret_expires_at
    return dict(
        id=row.id,
        url=row.url,
        account=row.account_id,
        description=row.description,
        events=list(row.events),
        accounts=list(row.accounts) if row.accounts is not None else None,
        headers=dict(row.headers or {}),
        enabled=row.enabled,
        exclude_machine=bool(row.exclude_machine),
        status=status_of(row),
        consecutive_failures=row.consecutive_failures,
        failing_since=events.iso(row.failing_since),
        backoff_until=events.iso(row.backoff_until),
        previous_secret_expires=events.iso(expires) if expires and expires > events.utcnow() else None,
        created=events.iso(row.created_at),
        updated=events.iso(row.updated_at),
    )


def endpoint_view(row: WebhookEndpoint) -> EndpointView:
    return EndpointView(**view(row))


async def get_endpoint(session: AsyncSession, endpoint_id: str, lock: bool = False) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id, with_for_update=lock)
    if row is None:
        raise not_found("Webhook", "id")
    return row


async def list_endpoints(
    session: AsyncSession, page: int, page_size: int, account: str | None
) -> tuple[list[WebhookEndpoint], int]:
    conditions = [WebhookEndpoint.account_id == account] if account else []
    total = await session.scalar(select(func.count()).select_from(WebhookEndpoint).where(*conditions)) or 0
    rows = await session.scalars(
        select(WebhookEndpoint).where(*conditions).order_by(WebhookEndpoint.created_at)
        .offset(page * page_size).limit(page_size)
    )
    return list(rows), total


async def refresh(session: AsyncSession, row: WebhookEndpoint) -> None:
    await session.flush()
    await session.refresh(row)


def rotate(row: WebhookEndpoint, sealer: Sealer, overlap_seconds: int) -> str:
    secret = new_secret()
    if overlap_seconds > 0:
        row.previous_secret = row.secret
        row.previous_secret_expires_at = events.utcnow() + timedelta(seconds=overlap_seconds)
    else:
        row.previous_secret = None
        row.previous_secret_expires_at = None
    row.secret = seal(sealer, secret)
    return secret


# --- delivery log ------------------------------------------------------------


def check_state(state: str | None) -> None:
    if state is not None and state not in DELIVERY_STATES:
        raise ApiError(400, f"status: must be one of {', '.join(DELIVERY_STATES)}", "status")


def deliveries_query(
    endpoint: str | None, event: str | None, state: str | None, account: str | None
) -> Select[Any]:
    check_state(state)
    conditions = []
    if endpoint:
        conditions.append(WebhookDelivery.endpoint_id == endpoint)
    if event:
        conditions.append(WebhookDelivery.event == event)
    if state:
        conditions.append(WebhookDelivery.state == state)
    if account:
        conditions.append(WebhookDelivery.account_id == account)
    return select(WebhookDelivery).where(*conditions)


async def list_deliveries(
    session: AsyncSession, query: Select[Any], page: int, page_size: int
) -> tuple[list[DeliveryView], int]:
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(await session.scalars(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .offset(page * page_size).limit(page_size)
    ))
    excerpts = await last_excerpts(session, [r.id for r in rows])
    return [delivery_view(r, excerpts.get(r.id)) for r in rows], total


async def last_excerpts(session: AsyncSession, ids: list[int]) -> dict[int, str | None]:
    if not ids:
        return {}
    result = await session.execute(
        select(WebhookAttempt.delivery_id, WebhookAttempt.response_excerpt)
        .where(WebhookAttempt.delivery_id.in_(ids))
        .distinct(WebhookAttempt.delivery_id)
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt.desc(), WebhookAttempt.id.desc())
    )
    return {delivery_id: excerpt for delivery_id, excerpt in result.tuples()}


def delivery_view(row: WebhookDelivery, excerpt: str | None) -> DeliveryView:
    waiting = row.state in (lifecycle.WEBHOOK_PENDING, lifecycle.WEBHOOK_RETRYING)
    return DeliveryView(
        id=row.id,
        webhook=row.endpoint_id,
        url=row.url,
        event=row.event,
        event_id=row.event_id,
        account=row.account_id,
        queue_id=row.queue_id,
        status=row.state,
        attempts=row.attempts_made,
        status_code=row.last_status,
        last_error=row.last_error,
        response_body=excerpt,
        created=events.iso(row.created_at),
        next_attempt=events.iso(row.next_attempt_at) if waiting else None,
        delivered=events.iso(row.delivered_at),
    )


def replay_values() -> dict[str, Any]:
    """Back to pending, due now, with a fresh retry window; the event id (webhook-id) stays."""
    return {
        "state": lifecycle.WEBHOOK_PENDING,
        "next_attempt_at": func.now(),
        "retry_from": func.now(),
        "claim_token": None,
        "claimed_until": None,
    }


# A delivery being attempted right now is left alone; its outcome stands.
_NOT_IN_FLIGHT = (WebhookDelivery.claimed_until.is_(None)) | (WebhookDelivery.claimed_until < func.now())


async def replay_one(session: AsyncSession, delivery_id: int) -> WebhookDelivery:
    replayed = await session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, _NOT_IN_FLIGHT)
        .values(**replay_values())
        .returning(WebhookDelivery)
        .execution_options(synchronize_session=False)
    )
    if replayed is None:
        if await session.get(WebhookDelivery, delivery_id) is None:
            raise not_found("Webhook delivery", "deliveryId")
        raise ApiError(409, "The delivery is being attempted right now; try again shortly", "deliveryId")
    return replayed


async def replay_many(session: AsyncSession, endpoint_id: str, since: datetime | None, state: str) -> int:
    conditions = [WebhookDelivery.endpoint_id == endpoint_id, _NOT_IN_FLIGHT]
    if state == "all":
        conditions.append(
            WebhookDelivery.state.in_((lifecycle.WEBHOOK_DELIVERED, lifecycle.WEBHOOK_FAILED))
        )
    else:
        conditions.append(WebhookDelivery.state == state)
    if since is not None:
        conditions.append(WebhookDelivery.created_at >= since)
    result = await session.execute(
        update(WebhookDelivery).where(*conditions).values(**replay_values())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
