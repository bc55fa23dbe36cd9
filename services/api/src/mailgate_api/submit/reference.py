"""Replies and forwards: turn a submit body with ``reference`` into a threaded message.

The referenced message is looked up in imap-sync's index (404 when unknown, so
nothing is queued); its content is fetched from imap-sync only when needed -
for forwards, and for replies without explicit recipients (Reply-To is not
indexed).  ``apply`` is pure: threading headers, subject, recipients, quoted
or attached original.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError
from mailgate_api.mailbox.content import fetch_raw, indexed
from mailgate_common import content
from mailgate_common.bus import Bus
from mailgate_common.submission import Address, Reference, SubmitRequest, as_list

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
    attach_messages: list[tuple[bytes, str]]


async def resolve(
    session: AsyncSession, bus: Bus, account: str, req: SubmitRequest, wait: float
) -> Original | None:
    ref = req.reference
    if ref is None:
        return None
    row = await indexed(session, account, ref.message)
    if row is None:
        raise ApiError(404, "Referenced message not found", "reference.message")
    original = Original(
        reference=ref, message_id=row.message_id, references=row.references,
        subject=row.subject, from_=row.from_addr, to=list(row.to_addr or []),
        cc=list(row.cc_addr or []),
    )
    needs_content = req.raw is None and (ref.action == "forward" or not as_list(req.to))
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
    if not original.message_id:
        return {}
    references = " ".join([*(original.references or "").split(), original.message_id])
    return {"In-Reply-To": original.message_id, "References": references}


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


def apply(req: SubmitRequest, original: Original, own_address: str | None) -> Applied:
    """The submit body rewritten as a reply/forward of ``original`` (pure)."""
    action = original.reference.action
    changes: dict[str, Any] = {}
    if req.subject is None:
        changes["subject"] = subject_for(original.subject, action)
    attach: list[tuple[bytes, str]] = []
    if action == "forward":
        if original.reference.inline:
            changes.update(_inline_forward(req, original))
        elif original.raw is not None:
            name = re.sub(r"[\x00-\x1f/\\]", " ", original.subject or "message")[:60].strip()
            attach.append((original.raw, f"{name or 'message'}.eml"))
    else:
        own = {own_address.lower()} if own_address else set()
        changes.update(_recipients(req, original, own))
    return Applied(
        request=msgspec.structs.replace(req, **changes),
        headers=threading_headers(original),
        attach_messages=attach,
    )


def stored(original: Original) -> dict[str, Any]:
    """The outbox row's ``reference`` column: what the sender flags after sending."""
    ref = original.reference
    return {"message": ref.message, "action": ref.action, "inline": ref.inline,
            "messageId": original.message_id}
