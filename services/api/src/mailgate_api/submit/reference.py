"""Replies and forwards: turn a submit body with ``reference`` into a threaded message.

The referenced message is looked up in imap-sync's index (404 when unknown, so
nothing is queued, unless ``ignoreMissing``); its content is fetched from
imap-sync only when needed - to quote it (``inline``), to carry its attachments
(``forwardAttachments``), and for replies without explicit recipients
(Reply-To is not indexed).  ``apply`` is pure: threading headers, subject,
recipients, quoted original, carried attachments - EmailEngine's behaviour.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, invalid
from mailgate_api.mailbox.content import fetch_raw, indexed
from mailgate_common import content
from mailgate_common.bus import Bus
from mailgate_common.submission import Address, Attachment, Reference, SubmitRequest, as_list

FORWARD_MARK = "---------- Forwarded message ---------"
REPLY_PREFIX = re.compile(r"^\s*re\s*:", re.I)
FORWARD_PREFIX = re.compile(r"^\s*(fwd?|fw)\s*:", re.I)


@dataclass
class Original:
    """What a reply or forward needs to know about the referenced message."""

    reference: Reference
    message_id: str | None
    references: str | None
    subject: str | None
    from_: dict[str, Any] | None
    to: list[dict[str, Any]]
    cc: list[dict[str, Any]]
    reply_to: list[dict[str, Any]] = field(default_factory=list)
    date: str | None = None
    raw: bytes | None = None
    plain: str | None = None
    html: str | None = None


@dataclass
class Applied:
    request: SubmitRequest
    headers: dict[str, str]


MISMATCH = "The referenced message was found, but its Message-ID does not match the expected value"


async def resolve(
    session: AsyncSession, bus: Bus, account: str, req: SubmitRequest, wait: float
) -> Original | None:
    """The referenced message, or None when it is missing and ``ignoreMissing`` is set."""
    ref = req.reference
    if ref is None:
        return None
    if ref.forward_attachments and ref.action != "forward":
        raise invalid("reference.forwardAttachments", 'is only allowed when action is "forward"')
    row = await indexed(session, account, ref.message)
    if row is None:
        if ref.ignore_missing:
            return None
        raise ApiError(404, "Referenced message was not found", "reference.message", code="ReferenceNotFound")
    if ref.message_id is not None and ref.message_id != row.message_id:
        raise ApiError(404, MISMATCH, "reference.messageId", code="MessageNotFound")
    original = Original(
        reference=ref, message_id=row.message_id, references=row.references,
        subject=row.subject, from_=row.from_addr, to=list(row.to_addr or []),
        cc=list(row.cc_addr or []),
    )
    needs_content = req.raw is None and (
        ref.inline or ref.forward_attachments or (ref.action != "forward" and not as_list(req.to))
    )
    if needs_content:
        raw = await fetch_raw(bus, account, row.id, wait, "reference.message")
        parsed = content.parse(raw)
        original.raw = raw
        original.reply_to = content.addresses(parsed, "reply-to")
        original.date = content.header_text(parsed, "date")
        original.plain, original.html = content.text_bodies(parsed)
    return original


def subject_for(original: str | None, action: str) -> str:
    base = original or ""
    if action == "forward":
        return base if FORWARD_PREFIX.match(base) else f"Fwd: {base}"
    return base if REPLY_PREFIX.match(base) else f"Re: {base}"


def _address(value: dict[str, Any]) -> Address:
    return Address(address=str(value["address"]), name=value.get("name"))


def _display(value: dict[str, Any]) -> str:
    name = value.get("name")
    return f"{name} <{value['address']}>" if name else str(value["address"])


def threading_headers(original: Original) -> dict[str, str]:
    """References on every reply and forward; In-Reply-To only on replies (as EmailEngine)."""
    if not original.message_id:
        return {}
    references = " ".join([*(original.references or "").split(), original.message_id])
    headers = {"References": references}
    if original.reference.action != "forward":
        headers["In-Reply-To"] = original.message_id
    return headers


def _recipients(req: SubmitRequest, original: Original, own: set[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    to = as_list(req.to)
    if not to:
        source = original.reply_to or ([original.from_] if original.from_ else [])
        to = [_address(a) for a in source]
        changes["to"] = to
    if original.reference.action == "reply-all":
        taken = {a.address.lower() for a in to} | own
        cc = list(as_list(req.cc))
        taken |= {a.address.lower() for a in cc}
        for value in (*original.to, *original.cc):
            address = str(value.get("address", ""))
            if address and address.lower() not in taken:
                taken.add(address.lower())
                cc.append(_address(value))
        changes["cc"] = cc
    return changes


def _forward_block(original: Original) -> list[str]:
    lines = [FORWARD_MARK]
    if original.from_:
        lines.append(f"From: {_display(original.from_)}")
    if original.date:
        lines.append(f"Date: {original.date}")
    lines.append(f"Subject: {original.subject or ''}")
    if original.to:
        lines.append("To: " + ", ".join(_display(a) for a in original.to))
    if original.cc:
        lines.append("Cc: " + ", ".join(_display(a) for a in original.cc))
    return lines


def _inline_forward(req: SubmitRequest, original: Original) -> dict[str, Any]:
    block = _forward_block(original)
    text = "\n".join([req.text or "", "", *block, "", original.plain or ""]).lstrip("\n")
    changes: dict[str, Any] = {"text": text}
    if req.html is not None or original.html is not None:
        mine = req.html if req.html is not None else html.escape(req.text or "").replace("\n", "<br>")
        quoted = original.html if original.html is not None else (
            f"<pre>{html.escape(original.plain or '')}</pre>"
        )
        header = "<br>".join(html.escape(line) for line in block)
        changes["html"] = f'{mine}<br><br><div class="forwarded">{header}<br><br>{quoted}</div>'
    return changes


def _quote_reply(req: SubmitRequest, original: Original) -> dict[str, Any]:
    who = _display(original.from_) if original.from_ else "someone"
    intro = f"On {original.date}, {who} wrote:" if original.date else f"{who} wrote:"
    changes: dict[str, Any] = {}
    if req.text is not None or req.html is None:
        quoted = "\n".join(f"> {line}" if line else ">" for line in (original.plain or "").splitlines())
        changes["text"] = "\n".join([req.text or "", "", intro, quoted])
    if req.html is not None or original.html is not None:
        mine = req.html if req.html is not None else html.escape(req.text or "").replace("\n", "<br>")
        body = original.html if original.html is not None else (
            f"<pre>{html.escape(original.plain or '')}</pre>"
        )
        changes["html"] = (f'{mine}<br><br><div class="quote">{html.escape(intro)}<br>'
                           f'<blockquote type="cite">{body}</blockquote></div>')
    return changes


def _carried_attachments(original: Original, keep_cids: bool) -> list[Attachment]:
    """The original's attachments (not its text bodies), for ``forwardAttachments``;
    images its html refers to keep their cid only when that html is quoted."""
    if original.raw is None:
        return []
    carried = []
    for part in content.walk(content.parse(original.raw)):
        msg = part.part
        if msg.get_content_type() in ("text/plain", "text/html") and not msg.get_filename() \
                and msg.get_content_disposition() != "attachment":
            continue
        data = content.part_bytes(msg)
        cid = (msg.get("Content-ID") or "").strip().strip("<>") or None
        carried.append(Attachment(
            content=base64.b64encode(data).decode("ascii"),
            filename=msg.get_filename(), content_type=msg.get_content_type(),
            content_disposition="inline" if msg.get_content_disposition() == "inline" else "attachment",
            cid=cid if keep_cids and part.related else None,
        ))
    return carried


def apply(req: SubmitRequest, original: Original, own_address: str | None) -> Applied:
    """The submit body rewritten as a reply/forward of ``original`` (pure)."""
    ref = original.reference
    changes: dict[str, Any] = {}
    if req.subject is None:
        changes["subject"] = subject_for(original.subject, ref.action)
    if ref.action == "forward":
        if ref.inline:
            changes.update(_inline_forward(req, original))
        if ref.forward_attachments:
            keep_cids = ref.inline and original.html is not None
            changes["attachments"] = [*req.attachments, *_carried_attachments(original, keep_cids)]
    else:
        if ref.inline:
            changes.update(_quote_reply(req, original))
        own = {own_address.lower()} if own_address else set()
        changes.update(_recipients(req, original, own))
    return Applied(request=msgspec.structs.replace(req, **changes), headers=threading_headers(original))


def stored(original: Original) -> dict[str, Any]:
    """The outbox row's ``reference`` column: what the sender flags after sending."""
    ref = original.reference
    return {"message": ref.message, "action": ref.action, "inline": ref.inline,
            "messageId": original.message_id}
