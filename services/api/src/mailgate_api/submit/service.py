"""REST submit: validate, compose MIME, and hand the message to the shared outbox path."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, invalid, not_found
from mailgate_api.submit import reference
from mailgate_api.suppression.service import screen
from mailgate_api.templates import service as templates
from mailgate_common import blocklist, events
from mailgate_common.db.models import Account, Gateway, Template
from mailgate_common.mime import InvalidMessage, build_message, normalize_address, prepare_raw
from mailgate_common.outbox import (
    AccountCannotSend,
    IdempotencyConflict,
    NewMessage,
    Queued,
    RecipientsSuppressed,
    UnknownAccount,
)
from mailgate_common.submission import Address, SubmitRequest, envelope_list, unsupported

# With mailMerge each entry is its own message, so these belong to the entries (or make no sense).
MERGE_FORBIDS = ("to", "cc", "bcc", "envelope", "raw", "render", "messageId")
_ATTRS = {"messageId": "message_id"}


def check(req: SubmitRequest) -> None:
    """Refuse, naming the field, what mailgate cannot honour or what contradicts itself."""
    refused = unsupported(req)
    if refused is not None:
        raise invalid(refused[0], f"is not supported: {refused[1]}")
    if req.mail_merge is not None:
        _check_merge(req)
    elif req.list_id is not None:
        raise invalid("listId", "is only allowed with mailMerge (a list message goes to one recipient)")
    if req.base_url is not None and req.base_url.strip() and not _is_base_url(req.base_url.strip()):
        raise invalid("baseUrl", "must be an absolute http or https URL, e.g. https://mail.example.com")
    if req.raw is not None:
        for name, value in (("text", req.text), ("html", req.html), ("attachments", req.attachments),
                            ("template", req.template), ("previewText", req.preview_text),
                            ("render", req.render not in (None, False))):
            if value:
                raise invalid(name, "cannot be combined with raw (raw is the whole message)")
    if req.dsn is not None:
        notify = dsn_notify(req)
        if "never" in notify and len(notify) > 1:
            raise invalid("dsn.notify", '"never" cannot be combined with other conditions')


def _check_merge(req: SubmitRequest) -> None:
    for name in MERGE_FORBIDS:
        if getattr(req, _ATTRS.get(name, name)) is not None:
            raise invalid(name, "cannot be combined with mailMerge (each entry is its own message: "
                                "set mailMerge[].to, .params, .messageId)")
    if req.reference is not None and req.reference.action == "reply-all":
        raise invalid("reference.action", '"reply-all" cannot be combined with mailMerge (every recipient\'s '
                                          "copy would also go to the original's recipients)")
    if req.list_id is not None and not blocklist.is_list_id(req.list_id):
        raise invalid("listId", "must be in host name form (letters, digits, hyphens, dots), e.g. newsletter")


def _is_base_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def dsn_notify(req: SubmitRequest) -> list[str]:
    if req.dsn is None or req.dsn.notify is None:
        return []
    return [req.dsn.notify] if isinstance(req.dsn.notify, str) else list(req.dsn.notify)


async def check_gateway(session: AsyncSession, gateway: str) -> None:
    """A submit naming a gateway that does not exist is refused, never sent another way."""
    if await session.scalar(select(Gateway.id).where(Gateway.id == gateway)) is None:
        raise not_found("Gateway", "gateway")


async def related(session: AsyncSession, res: Resources, account: str, req: SubmitRequest
                  ) -> tuple[Template | None, reference.Original | None]:
    """What the submit names besides itself: (its template, the referenced message), each None
    when not asked for; an unknown gateway or template is refused (404)."""
    template = original = None
    if req.gateway is not None:
        await check_gateway(session, req.gateway)
    if req.template is not None:
        template = await templates.load(session, req.template, account)
    if req.reference is not None:
        original = await reference.resolve(session, res.bus, account, req, res.settings.imap_fetch_timeout)
    return template, original


def local_options(req: SubmitRequest) -> dict[str, Any]:
    """The outbox row's ``options`` (the gateway unchecked: see :func:`check_gateway`)."""
    out: dict[str, Any] = {}
    if req.gateway is not None:
        out["gateway"] = req.gateway
    if req.sent_mail_path is not None:
        out["sentMailPath"] = req.sent_mail_path
    if req.dsn is not None:
        try:
            recipient = normalize_address("dsn.recipient", req.dsn.recipient) if req.dsn.recipient else None
        except InvalidMessage as exc:
            raise invalid(exc.field, exc.message) from exc
        out["dsn"] = {"id": req.dsn.id, "return": req.dsn.return_, "notify": dsn_notify(req),
                      "recipient": recipient}
    # Only what the request says: an absent flag leaves it to the runtime settings at send time.
    track_opens, track_clicks = req.track_opens, req.track_clicks
    if req.tracking_enabled is not None:
        # EmailEngine's older flag sets whichever of the two is not given.
        track_opens = req.tracking_enabled if track_opens is None else track_opens
        track_clicks = req.tracking_enabled if track_clicks is None else track_clicks
    if track_opens is not None:
        out["trackOpens"] = track_opens
    if track_clicks is not None:
        out["trackClicks"] = track_clicks
    if req.base_url is not None and req.base_url.strip():
        out["baseUrl"] = req.base_url.strip().rstrip("/")
    return out


async def options(session: AsyncSession, req: SubmitRequest) -> dict[str, Any]:
    """The outbox row's ``options``; a ``gateway`` that does not exist is refused (404)."""
    if req.gateway is not None:
        await check_gateway(session, req.gateway)
    return local_options(req)


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
    with :func:`reference.resolve`; without it the reference counts as unknown,
    unless ``ignoreMissing`` says to send it as a new message.
    """
    if req.reference is not None and original is None and not req.reference.ignore_missing:
        raise ApiError(404, "Referenced message was not found", "reference.message", code="ReferenceNotFound")
    try:
        if req.raw is not None:
            new = _from_raw(account, req, max_attempts)
            if len(new.raw) > max_size:
                raise ApiError(413, f"Message is {len(new.raw)} bytes; the limit is {max_size}", "raw")
            new.reference = reference.stored(original) if original else None
            return new
        default_from = Address(address=account.email, name=account.name) if account.email else None
        headers: dict[str, str] = {}
        if original is not None:
            applied = reference.apply(req, original, account.email)
            req, headers = applied.request, applied.headers
        built = build_message(req, default_from=default_from, extra_headers=headers)
    except InvalidMessage as exc:
        raise invalid(exc.field, exc.message) from exc
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
    recipients = (envelope_list(req.envelope.to) if req.envelope else None) or prepared.header_recipients
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


async def queue(res: Resources, new: NewMessage, skip_suppressed: bool) -> Queued:
    """Commit ``new`` to the outbox; the refusals as EmailEngine-coded ApiErrors."""
    while True:
        try:
            return await res.outbox.enqueue(new)
        except RecipientsSuppressed as exc:
            screen(new, exc.blocked, skip_suppressed)  # raises unless some recipients remain
        except UnknownAccount as exc:
            raise not_found("Account", "account") from exc
        except AccountCannotSend as exc:
            raise ApiError(404, "SMTP configuration not found: the account has no SMTP settings to send with",
                           "account", code="SMTPUnavailable") from exc
        except IdempotencyConflict as exc:
            raise ApiError(409, "Idempotency-Key was already used with a different request",
                           "Idempotency-Key", code="IdempotencyConflict") from exc
