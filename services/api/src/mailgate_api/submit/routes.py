from __future__ import annotations

from typing import Annotated

from litestar import post
from litestar.params import Parameter

from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_api.submit import reference, service
from mailgate_api.submit.schemas import SubmitResponse
from mailgate_api.suppression.service import screen
from mailgate_common import events
from mailgate_common.db.models import Account
from mailgate_common.outbox import (
    AccountCannotSend,
    IdempotencyConflict,
    RecipientsSuppressed,
    UnknownAccount,
    sending_account,
)
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
    request: ApiRequest,
    res: Resources,
    idempotency_key: IdempotencyKey = None,
) -> SubmitResponse:
    # The account's own name and address only fill in what the body leaves out;
    # whether the account exists and can send is checked by the guarded insert.
    row = await sending_account(res.db, account) if _needs_identity(data) else Account(id=account)
    if row is None:
        raise not_found("Account", "account")
    original = None
    if data.reference is not None:
        async with res.db.sessions() as session:
            original = await reference.resolve(session, res.bus, account, data,
                                               res.settings.imap_fetch_timeout)
    new = service.compose(row, data, res.settings.delivery_attempts, res.settings.max_message_size, original)
    new.idempotency_key = idempotency_key
    new.request_fingerprint = await request.body() if idempotency_key else None
    new.traceparent = current_traceparent()
    while True:
        try:
            queued = await res.outbox.enqueue(new)
            break
        except RecipientsSuppressed as exc:
            screen(new, exc.blocked, data.skip_suppressed)  # raises unless some recipients remain
        except UnknownAccount as exc:
            raise not_found("Account", "account") from exc
        except AccountCannotSend as exc:
            raise ApiError(422, "account has no SMTP settings to send with", "account") from exc
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


def _needs_identity(data: SubmitRequest) -> bool:
    return data.from_ is None or data.raw is not None or data.reference is not None
