"""``POST /v1/account/{account}/message/{message}/submit``: send a stored draft.

The draft's source comes from imap-sync (as for any read) and is queued as a
raw submit through the submit service, so it is checked, composed and stored
exactly as ``POST /v1/account/{account}/submit`` with ``raw`` would be.  Once
delivered, the draft is removed from its folder (and a Sent copy filed unless
``copy: false``).
"""

from __future__ import annotations

import base64
from typing import Any

from litestar import post

from mailgate_api.deps import ApiRequest, Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_api.mailbox import content, ops_service, rpc
from mailgate_api.mailbox.ops_schemas import DraftSubmit
from mailgate_api.submit import service as submit_service
from mailgate_api.submit.routes import IdempotencyKey
from mailgate_common import events
from mailgate_common.outbox import sending_account
from mailgate_common.submission import SubmitRequest
from mailgate_common.telemetry import current_traceparent


@post("/v1/account/{account:str}/message/{message:str}/submit", status_code=200, tags=["Submit"],
      summary="Send a stored draft")
async def submit_draft(account: str, message: str, request: ApiRequest, res: Resources,
                       data: DraftSubmit | None = None, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    body = data or DraftSubmit()
    row = await ops_service.locate(res, account, message)
    if not await ops_service.is_draft(res, row):
        raise ApiError(400, "The message is not a draft (not flagged \\Draft, not in the Drafts folder)",
                       "message", code="MessageNotDraft")
    raw = await content.fetch_raw(res.bus, account, row.id, res.settings.imap_fetch_timeout, "message")
    req = SubmitRequest(
        raw=base64.b64encode(raw).decode("ascii"), envelope=body.envelope, copy=body.copy,
        sent_mail_path=body.sent_mail_path, send_at=body.send_at, delivery_attempts=body.delivery_attempts,
        gateway=body.gateway, dsn=body.dsn, proxy=body.proxy, local_address=body.local_address,
    )
    submit_service.check(req)
    sender = await sending_account(res.db, account)
    if sender is None:
        raise not_found("Account", "account")
    async with res.db.sessions() as session:
        options = await submit_service.options(session, req)
    new = submit_service.compose(sender, req, res.settings.delivery_attempts, res.settings.max_message_size)
    # Once delivered, imap-sync removes the draft when it files the Sent copy (EmailEngine
    # removes sent drafts); the key is mailgate's own in the outbox row's options.
    new.options = {**options, "draft": {"id": row.id, **rpc.located(row)}}
    new.idempotency_key = idempotency_key
    new.request_fingerprint = (message.encode() + b"\0" + await request.body()) if idempotency_key else None
    new.traceparent = current_traceparent()
    # A draft's recipients are the author's choice: a suppressed one refuses the send.
    queued = await submit_service.queue(res, new, skip_suppressed=False)
    return {"response": "Queued for delivery", "messageId": queued.message_id,
            "queueId": queued.queue_id, "sendAt": events.iso(queued.send_at)}
