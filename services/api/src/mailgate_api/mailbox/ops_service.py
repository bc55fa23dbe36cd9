"""What the mailbox operations look up before asking imap-sync: the account, the
message's place in the index, the message an upload stores, a draft to send."""

from __future__ import annotations

import base64
import binascii

from sqlalchemy import select

from mailgate_api.deps import Resources
from mailgate_api.errors import ApiError, invalid, not_found
from mailgate_api.mailbox import content
from mailgate_api.mailbox.ops_schemas import MessageUpload
from mailgate_common.db.models import Account, IndexedMessage, Mailbox
from mailgate_common.mime import InvalidMessage, build_message
from mailgate_common.submission import Address, EnvelopeIn, SubmitRequest, as_list


async def require_account(res: Resources, account: str) -> Account:
    async with res.db.sessions() as session:
        row = await session.get(Account, account)
    if row is None:
        raise not_found("Account", "account")
    return row


async def locate(res: Resources, account: str, message: str) -> IndexedMessage:
    """The indexed message (404 AccountNotFound / MessageNotFound)."""
    await require_account(res, account)
    async with res.db.sessions() as session:
        row = await content.indexed(session, account, message)
    if row is None:
        raise not_found("Message", "message")
    return row


async def is_draft(res: Resources, row: IndexedMessage) -> bool:
    """Flagged \\Draft, or kept in the Drafts folder (EmailEngine takes either)."""
    if "\\Draft" in row.flags:
        return True
    async with res.db.sessions() as session:
        use = await session.scalar(select(Mailbox.special_use).where(
            Mailbox.account_id == row.account_id, Mailbox.path == row.path))
    return use == "\\Drafts"


async def upload_raw(res: Resources, account: str, data: MessageUpload) -> bytes:
    """The message an upload stores: ``raw`` as given, or built like a submit's."""
    row = await require_account(res, account)
    if data.reference is not None:
        raise invalid("reference", "is not supported for uploads (submit with reference to reply or forward)")
    if data.raw is not None:
        for name, value in (("text", data.text), ("html", data.html), ("attachments", data.attachments),
                            ("subject", data.subject), ("from", data.from_), ("to", data.to)):
            if value:
                raise invalid(name, "cannot be combined with raw (raw is the whole message)")
        try:
            raw = base64.b64decode(data.raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid("raw", "is not valid base64") from exc
        if not raw.strip():
            raise invalid("raw", "is empty")
    else:
        default_from = Address(address=row.email, name=row.name) if row.email else None
        sender = data.from_ or default_from
        recipients = [a.address for a in (*as_list(data.to), *as_list(data.cc), *as_list(data.bcc))]
        request = SubmitRequest(
            from_=data.from_, to=data.to, cc=data.cc, bcc=data.bcc, subject=data.subject, text=data.text,
            html=data.html, attachments=data.attachments, message_id=data.message_id, headers=data.headers,
            # A draft may have no recipients yet; the envelope only satisfies the builder.
            envelope=None if recipients or sender is None else EnvelopeIn(to=[sender.address]),
        )
        try:
            raw = build_message(request, default_from=default_from).raw
        except InvalidMessage as exc:
            raise invalid(exc.field, exc.message) from exc
    if len(raw) > res.settings.max_message_size:
        raise ApiError(413, f"Message is {len(raw)} bytes; the limit is {res.settings.max_message_size}",
                       "raw", code="PayloadTooLarge")
    return raw
