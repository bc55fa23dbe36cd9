"""REST submit: validate, compose MIME, and hand the message to the shared outbox path."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from mailgate_api.errors import ApiError
from mailgate_api.submit import reference
from mailgate_common import events
from mailgate_common.db.models import Account
from mailgate_common.mime import InvalidMessage, build_message, normalize_address, prepare_raw
from mailgate_common.outbox import NewMessage
from mailgate_common.submission import Address, SubmitRequest


def _send_at(req: SubmitRequest) -> datetime:
    now = events.utcnow()
    if req.send_at is None:
        return now
    when = req.send_at if req.send_at.tzinfo else req.send_at.replace(tzinfo=UTC)
    return max(now, when)


def compose(
    account: Account,
    req: SubmitRequest,
    max_attempts: int,
    max_size: int,
    original: reference.Original | None = None,
) -> NewMessage:
    """Turn a submit body into an outbox row's content; raises ApiError naming the field.

    A body with ``reference`` needs the referenced message, resolved beforehand
    with :func:`reference.resolve`; without it the reference counts as unknown.
    """
    if req.reference is not None and original is None:
        raise ApiError(404, "Referenced message not found", "reference.message")
    try:
        if req.raw is not None:
            new = _from_raw(account, req, max_attempts)
            if len(new.raw) > max_size:
                raise ApiError(413, f"Message is {len(new.raw)} bytes; the limit is {max_size}", "raw")
            new.reference = reference.stored(original) if original else None
            return new
        default_from = Address(address=account.email, name=account.name) if account.email else None
        headers: dict[str, str] = {}
        attach: list[tuple[bytes, str]] = []
        if original is not None:
            applied = reference.apply(req, original, account.email)
            req, headers, attach = applied.request, applied.headers, applied.attach_messages
        built = build_message(req, default_from=default_from, extra_headers=headers,
                              attach_messages=attach)
    except InvalidMessage as exc:
        raise ApiError(422, exc.message, exc.field) from exc
    if len(built.raw) > max_size:
        raise ApiError(413, f"Message is {len(built.raw)} bytes; the limit is {max_size}", "attachments")
    return NewMessage(
        account_id=account.id,
        message_id=built.message_id,
        envelope_from=built.envelope_from,
        envelope_to=built.envelope_to,
        subject=built.subject,
        raw=built.raw,
        send_at=_send_at(req),
        max_attempts=req.delivery_attempts or max_attempts,
        copy=req.copy,
        reference=reference.stored(original) if original else None,
    )


def _from_raw(account: Account, req: SubmitRequest, max_attempts: int) -> NewMessage:
    assert req.raw is not None
    try:
        raw = base64.b64decode(req.raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessage("raw", "is not valid base64") from exc
    prepared = prepare_raw(raw)
    envelope_from = (req.envelope.from_ if req.envelope and req.envelope.from_ else None) or (
        prepared.header_from or account.email
    )
    recipients = (req.envelope.to if req.envelope and req.envelope.to else None) or prepared.header_recipients
    if not envelope_from:
        raise InvalidMessage("envelope.from", "is required: the message has no From address")
    if not recipients:
        raise InvalidMessage("envelope.to", "is required: the message has no recipients")
    return NewMessage(
        account_id=account.id,
        message_id=prepared.message_id,
        envelope_from=normalize_address("envelope.from", envelope_from),
        envelope_to=[normalize_address(f"envelope.to[{i}]", r) for i, r in enumerate(recipients)],
        subject=prepared.subject,
        raw=prepared.raw,
        send_at=_send_at(req),
        max_attempts=req.delivery_attempts or max_attempts,
        copy=req.copy,
    )
