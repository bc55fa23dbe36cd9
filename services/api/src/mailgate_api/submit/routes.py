from __future__ import annotations

import base64
from typing import Annotated

from litestar import post
from litestar.params import Parameter

from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import not_found
from mailgate_api.submit import merge, reference, service
from mailgate_api.submit.schemas import IdempotencyResult, MergeResponse, ReferenceResult, SubmitResponse
from mailgate_api.templates import service as templates
from mailgate_common import events
from mailgate_common.db.models import Account
from mailgate_common.outbox import sending_account
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
) -> SubmitResponse | MergeResponse:
    service.check(data)
    if data.mail_merge is not None:
        return await merge.submit(account, data, res, await request.body(), idempotency_key,
                                  current_traceparent())
    # The account's own name and address only fill in what the body leaves out;
    # whether the account exists and can send is checked by the guarded insert.
    row = await sending_account(res.db, account) if _needs_identity(data) else Account(id=account)
    if row is None:
        raise not_found("Account", "account")
    options = service.local_options(data)
    original = None
    template = None
    # Most submits need no lookup: they must not pay for a session (the hot path).
    if data.gateway is not None or data.reference is not None or data.template is not None:
        async with res.db.sessions() as session:
            template, original = await service.related(session, res, account, data)
    # Rendered before composing: a part that fails to render queues nothing (422).
    data = templates.apply(data, template, row, res.settings.service_url)
    new = service.compose(row, data, res.settings.delivery_attempts, res.settings.max_message_size, original)
    new.options = options
    answer_reference = _reference_result(data, original)
    if data.dry_run:
        # Nothing is stored, queued or sent: the client sees what would go out.
        return SubmitResponse(response="Dry run", message_id=new.message_id, reference=answer_reference,
                              preview=base64.b64encode(new.raw).decode("ascii"))
    new.idempotency_key = idempotency_key
    new.request_fingerprint = await request.body() if idempotency_key else None
    new.traceparent = current_traceparent()
    queued = await service.queue(res, new, data.skip_suppressed)
    return SubmitResponse(
        response="Queued for delivery",
        message_id=queued.message_id,
        send_at=events.iso(queued.send_at) or "",
        queue_id=queued.queue_id,
        reference=answer_reference,
        idempotency=IdempotencyResult(key=idempotency_key, status="HIT" if queued.replayed else "MISS")
        if idempotency_key else None,
    )


def _reference_result(data: SubmitRequest, original: reference.Original | None) -> ReferenceResult | None:
    if data.reference is None:
        return None
    if original is None:
        return ReferenceResult(message=data.reference.message, success=False,
                               error="Referenced message was not found")
    return ReferenceResult(message=data.reference.message, success=True)


def _needs_identity(data: SubmitRequest) -> bool:
    # A dry run is never inserted, so the guarded insert cannot say the account is unknown.
    return (data.dry_run or data.from_ is None or data.raw is not None or data.reference is not None
            or data.template is not None or (data.render is not None and data.render is not False))
