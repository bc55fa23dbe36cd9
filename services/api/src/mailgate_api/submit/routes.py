from __future__ import annotations

from typing import Annotated

from litestar import Request, post
from litestar.params import Parameter

from mailgate_api.accounts.service import get_account
from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError
from mailgate_api.submit import reference, service
from mailgate_api.submit.schemas import SubmitResponse
from mailgate_api.suppression.service import screen
from mailgate_common import events
from mailgate_common.outbox import IdempotencyConflict, enqueue
from mailgate_common.submission import SubmitRequest
from mailgate_common.telemetry import current_traceparent

IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key",
        default=None,
        max_length=255,
        description="Retrying with the same key returns the first answer instead of sending twice",
    ),
]


@post(
    "/v1/account/{account:str}/submit",
    status_code=200,
    tags=["Submit"],
    summary="Queue a message for delivery",
)
async def submit(
    account: str,
    data: SubmitRequest,
    request: Request[object, object, object],
    res: Resources,
    idempotency_key: IdempotencyKey = None,
) -> SubmitResponse:
    # One short read-only session for the checks; the write is enqueue's own transaction.
    async with res.db.sessions() as session:
        row = await get_account(session, account)
        if not row.smtp:
            raise ApiError(422, "account has no SMTP settings to send with", "account")
        original = await reference.resolve(session, res.bus, account, data,
                                           res.settings.imap_fetch_timeout)
        new = service.compose(row, data, res.settings.delivery_attempts, res.settings.max_message_size,
                              original)
        await screen(session, account, new, data.skip_suppressed)
    new.idempotency_key = idempotency_key
    new.request_fingerprint = await request.body() if idempotency_key else None
    new.traceparent = current_traceparent()
    try:
        queued = await enqueue(res.db, res.relay, new)
    except IdempotencyConflict as exc:
        raise ApiError(
            409, "Idempotency-Key was already used with a different request", "Idempotency-Key"
        ) from exc
    return SubmitResponse(
        response="Queued for delivery",
        message_id=queued.message_id,
        send_at=events.iso(queued.send_at) or "",
        queue_id=queued.queue_id,
    )
