"""Mail merge (EmailEngine's ``mailMerge``): one submit, one message per recipient.

Each entry becomes its own message to ``entry.to``, rendered with the entry's
``params`` (the template is loaded once); its ``messageId`` and ``sendAt``
override the message's.  The answer is EmailEngine's ``{"mailMerge": [...]}``
in entry order.  A recipient on the suppression list or on the ``listId``'s
blocklist is skipped (``success: true, skipped: {reason, listId}``); a problem
of one entry (a bad address, a render error of its params) fails that entry
only.  Everything queued is committed in one transaction before the answer.

With an ``Idempotency-Key`` entry ``i`` is stored under ``<key>:mailMerge:<i>``,
so a retried merge answers what the first one queued and queues nothing twice.
``dryRun`` decides every entry (skips and errors included) and queues nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import func, select

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, not_found
from mailgate_api.submit import reference, service
from mailgate_api.submit.schemas import IdempotencyResult, MergeResponse, MergeResult, MergeSkipped, MergeTo
from mailgate_api.templates import service as templates
from mailgate_common import blocklist, events, service_settings, suppression
from mailgate_common.db.models import Account, Template
from mailgate_common.mime import new_message_id
from mailgate_common.outbox import (
    AccountCannotSend,
    HeldBack,
    IdempotencyConflict,
    NewMessage,
    Queued,
    UnknownAccount,
    fingerprint,
    sending_account,
)
from mailgate_common.settings import Settings
from mailgate_common.submission import MailMergeEntry, RenderOptions, SubmitRequest
from mailgate_common.tracking.tokens import base_url, signer_for

# Entries built between two yields to the event loop: building 10,000 messages
# takes seconds of CPU, and the worker's other requests must not wait for all of it.
CHUNK = 100
LIST_HEADERS = frozenset({"list-id", "list-unsubscribe", "list-unsubscribe-post"})


@dataclass(frozen=True)
class Shared:
    """What every entry of one merge uses, looked up once."""

    account: Account
    data: SubmitRequest
    template: Template | None
    original: reference.Original | None
    options: dict[str, Any]
    blocked: dict[str, str]  # on the listId's blocklist: address as given -> reason
    suppressed: dict[str, str]
    list_base: str | None  # the unsubscribe URLs' base, with listId
    # imap-sync watches the account's INBOX, so a mailto unsubscribe sent there is acted on.
    mailto: bool = False


signer = signer_for


def entry_key(key: str, index: int) -> str:
    return f"{key}:mailMerge:{index}"


async def submit(account: str, data: SubmitRequest, res: Resources, body: bytes,
                 idempotency_key: str | None, traceparent: str | None) -> MergeResponse:
    """Build, screen and queue every entry of ``data.mailMerge`` (checked by ``service.check``)."""
    assert data.mail_merge is not None
    shared = await _shared(account, data, res)
    entries = data.mail_merge
    request_hash = fingerprint(body) if idempotency_key else None
    keys = [entry_key(idempotency_key, i) for i in range(len(entries))] if idempotency_key else []
    replayed: dict[str, Queued] = {}
    if idempotency_key and not data.dry_run:
        try:
            replayed = await res.outbox.find_idempotent_many(account, keys, request_hash)
        except IdempotencyConflict as exc:
            raise _conflict() from exc
    results: list[MergeResult | None] = [None] * len(entries)
    pending: list[tuple[int, NewMessage]] = []
    for index, entry in enumerate(entries):
        if index and index % CHUNK == 0:
            await asyncio.sleep(0)
        to = MergeTo(address=entry.to.address, name=entry.to.name)
        if keys and (earlier := replayed.get(keys[index])) is not None:
            results[index] = _queued(to, earlier)
            continue
        skipped = _skipped(shared, entry)
        if skipped is not None:
            results[index] = MergeResult(success=True, to=to, skipped=skipped)
            continue
        try:
            new = compose(shared, entry, res.settings)
        except ApiError as exc:
            results[index] = _failed(to, index, exc)
            continue
        if data.dry_run:
            results[index] = MergeResult(success=True, to=to, message_id=new.message_id,
                                         send_at=events.iso(new.send_at))
            continue
        new.idempotency_key = keys[index] if keys else None
        new.request_hash = request_hash
        new.lookup_key_first = False  # looked up above, all at once
        new.traceparent = traceparent
        pending.append((index, new))
    if pending:
        answers = await _enqueue(res, [new for _, new in pending])
        for (index, _), answer in zip(pending, answers, strict=True):
            to = MergeTo(address=entries[index].to.address, name=entries[index].to.name)
            if isinstance(answer, HeldBack):
                # Suppressed between the screening above and the insert.
                results[index] = MergeResult(success=True, to=to,
                                             skipped=MergeSkipped(reason=_reason(answer.blocked)))
            else:
                results[index] = _queued(to, answer)
                if answer.replayed:
                    replayed[keys[index]] = answer
    answer_list = [r for r in results if r is not None]
    return MergeResponse(
        mail_merge=answer_list,
        idempotency=IdempotencyResult(key=idempotency_key, status="HIT" if replayed else "MISS")
        if idempotency_key else None,
    )


async def _shared(account: str, data: SubmitRequest, res: Resources) -> Shared:
    row = await sending_account(res.db, account)
    if row is None:
        raise not_found("Account", "account")
    if not row.smtp and not data.dry_run:
        # Before building thousands of messages none of which could be queued.
        raise _cannot_send()
    assert data.mail_merge is not None
    addresses = [entry.to.address for entry in data.mail_merge]
    options = service.local_options(data)
    if data.list_id is not None:
        options["listId"] = data.list_id
    blocked: dict[str, str] = {}
    service_url = None
    watched = False
    async with res.db.sessions() as session:
        template, original = await service.related(session, res, account, data)
        if data.list_id is not None:
            blocked = await blocklist.blocked(session, data.list_id, addresses)
            # A send-only account's imap is JSON null (see the stats route), not SQL NULL.
            watched = bool(await session.scalar(
                select(func.jsonb_typeof(Account.imap) == "object").where(Account.id == account)))
            if not _given(data.base_url) and not res.settings.tracking_base_url:
                # Read only when it decides the base: the runtime setting can change at any time.
                service_url = (await service_settings.read(session, ["serviceUrl"]))["serviceUrl"]
    list_base = None
    if data.list_id is not None:
        settings = res.settings
        list_base = base_url(_given(data.base_url), settings.tracking_base_url, service_url, settings.service_url,
                             fallback=f"http://{settings.api_host}:{settings.api_port}")
    return Shared(
        account=row, data=data, template=template, original=original, options=options, blocked=blocked,
        suppressed=await suppression.suppressed(res.db, account, addresses), list_base=list_base,
        mailto=watched,
    )


def _given(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _skipped(shared: Shared, entry: MailMergeEntry) -> MergeSkipped | None:
    address = entry.to.address
    if address in shared.blocked:
        return MergeSkipped(reason=shared.blocked[address], list_id=shared.data.list_id)
    if address in shared.suppressed:
        return MergeSkipped(reason=shared.suppressed[address])
    return None


def compose(shared: Shared, entry: MailMergeEntry, settings: Settings) -> NewMessage:
    """One entry's message, as EmailEngine builds it: the merge's fields with ``to`` set to the
    entry's recipient, its ``messageId``/``sendAt`` over the message's, its ``params`` rendered."""
    data, account = shared.data, shared.account
    req = msgspec.structs.replace(
        data, mail_merge=None, list_id=None, to=[entry.to],
        message_id=entry.message_id,
        send_at=entry.send_at or data.send_at,
        render=RenderOptions(params=entry.params) if entry.params is not None else None,
    )
    unsubscribe_url = None
    if shared.list_base is not None and data.list_id is not None:
        req, unsubscribe_url = _list_message(req, shared.list_base, data.list_id, account, settings,
                                             shared.mailto)
    req = templates.apply(req, shared.template, account, settings.service_url, unsubscribe_url)
    new = service.compose(account, req, settings.delivery_attempts, settings.max_message_size, shared.original)
    new.options = shared.options
    return new


def _list_message(req: SubmitRequest, base: str, list_id: str, account: Account,
                  settings: Settings, mailto: bool) -> tuple[SubmitRequest, str]:
    """The message with its List-* headers (RFC 2369, RFC 8058) and its unsubscribe URL.

    The URL names the Message-ID, so the message gets its id here rather than when composed.
    """
    sender = req.from_.address if req.from_ is not None else account.email or ""
    message_id = _message_id(req.message_id) if req.message_id else new_message_id(sender)
    recipient = req.to[0].address.strip() if isinstance(req.to, list) else ""
    sign = signer(settings)
    url = sign.unsubscribe_url(base, account=account.id, list_id=list_id, recipient=recipient,
                               message_id=message_id)
    targets = [f"<{url}>"]
    if mailto and account.email:
        targets.append("<" + sign.unsubscribe_mailto(account.email, account=account.id, list_id=list_id,
                                                     recipient=recipient, message_id=message_id) + ">")
    domain = (urlsplit(base).hostname or "localhost").lower()
    # Ours replace any the request set: they must match the list and the signed URL.
    headers = {name: value for name, value in req.headers.items() if name.lower() not in LIST_HEADERS}
    headers["List-ID"] = f"<{list_id}.{domain}>"
    headers["List-Unsubscribe"] = ", ".join(targets)
    headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return msgspec.structs.replace(req, message_id=message_id, headers=headers), url


def _message_id(value: str) -> str:
    # The header's form (mime checks it when composing), so the URL names the same id.
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _queued(to: MergeTo, queued: Queued) -> MergeResult:
    return MergeResult(success=True, to=to, message_id=queued.message_id, queue_id=queued.queue_id,
                       send_at=events.iso(queued.send_at))


def _failed(to: MergeTo, index: int, exc: ApiError) -> MergeResult:
    message = exc.message
    if exc.field and exc.field.startswith("to[0]"):
        # The entry's recipient, as the client wrote it.
        message = message.replace(exc.field, f"mailMerge[{index}].to{exc.field[len('to[0]'):]}", 1)
    return MergeResult(success=False, to=to, error=message, code=exc.code or "SubmitFail", status_code=exc.status)


def _reason(blocked: dict[str, str]) -> str:
    return next(iter(blocked.values()))


async def _enqueue(res: Resources, news: list[NewMessage]) -> list[Queued | HeldBack]:
    try:
        return await res.outbox.enqueue_many(news)
    except UnknownAccount as exc:
        raise not_found("Account", "account") from exc
    except AccountCannotSend as exc:
        raise _cannot_send() from exc
    except IdempotencyConflict as exc:
        raise _conflict() from exc


def _cannot_send() -> ApiError:
    return ApiError(404, "SMTP configuration not found: the account has no SMTP settings to send with",
                    "account", code="SMTPUnavailable")


def _conflict() -> ApiError:
    return ApiError(409, "Idempotency-Key was already used with a different request",
                    "Idempotency-Key", code="IdempotencyConflict")
