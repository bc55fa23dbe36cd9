"""Decoding a whole RFC 822 message into EmailEngine's message JSON (pure, no I/O).

Parts are numbered like IMAP body sections ("1", "2.1", ...), so an
attachment id - the message id plus the section, base64url encoded - points
at the same part for as long as the message exists.  Text bodies are the
inline text/plain and text/html parts, decoded to UTF-8 whatever their
charset; every other leaf part (and every attached message) is an attachment.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from mailgate_common.events import iso


@dataclass(frozen=True)
class Part:
    section: str
    part: Message
    # True inside a multipart/related: an image the html refers to by cid.
    related: bool


@dataclass(frozen=True)
class AttachmentData:
    content_type: str
    filename: str | None
    data: bytes


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def part_id(message_id: str, section: str) -> str:
    """Opaque id of one part of a message (attachments, the text block)."""
    return base64.urlsafe_b64encode(f"{message_id}/{section}".encode()).decode().rstrip("=")


def split_part_id(value: str) -> tuple[str, str] | None:
    """(message id, section) of a :func:`part_id`, or None for anything else."""
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    message_id, sep, section = decoded.rpartition("/")
    if not sep or not message_id or not section.replace(".", "").isdigit():
        return None
    return message_id, section


def walk(message: Message) -> Iterator[Part]:
    """Leaf parts with their IMAP section numbers; attached messages are leaves."""

    def visit(part: Message, section: str, related: bool) -> Iterator[Part]:
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            inner_related = related or part.get_content_subtype() == "related"
            for i, child in enumerate(part.get_payload(), start=1):
                assert isinstance(child, Message)
                yield from visit(child, f"{section}.{i}" if section else str(i), inner_related)
        else:
            yield Part(section or "1", part, related)

    yield from visit(message, "", False)


def _is_body_text(part: Part) -> bool:
    msg = part.part
    if msg.get_content_type() not in ("text/plain", "text/html"):
        return False
    return msg.get_content_disposition() != "attachment" and not msg.get_filename()


def decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", errors="replace")
    # CRLF is wire format; JSON consumers expect plain newlines.
    return text.replace("\r\n", "\n")


def _encoded_size(part: Message) -> int:
    payload = part.get_payload(decode=False)
    if isinstance(payload, str):
        return len(payload.encode("utf-8", errors="replace"))
    if isinstance(payload, list):  # an attached message
        return len(part.as_bytes()) if isinstance(part, EmailMessage) else 0
    return 0


def _address(name: str, address: str) -> dict[str, str]:
    out = {"address": address}
    if name:
        out["name"] = name
    return out


def addresses(message: Message, header: str) -> list[dict[str, str]]:
    values = [str(v) for v in message.get_all(header, [])]
    return [_address(n, a) for n, a in getaddresses(values) if a]


def header_text(message: Message, header: str) -> str | None:
    value = message.get(header)
    return " ".join(str(value).split()) if value is not None else None


def _date(message: Message) -> str | None:
    value = header_text(message, "date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return iso(parsed) if parsed.tzinfo else None


def text_bodies(message: Message) -> tuple[str | None, str | None]:
    """The message's plain and html text (several inline parts are joined)."""
    plain: list[str] = []
    html: list[str] = []
    for part in walk(message):
        if _is_body_text(part):
            target = html if part.part.get_content_subtype() == "html" else plain
            target.append(decoded_text(part.part))
    return ("\n".join(plain) if plain else None), ("\n".join(html) if html else None)


def message_json(raw: bytes, message_id: str) -> dict[str, Any]:
    """EmailEngine's message JSON for the content fields (the index adds uid, path, flags)."""
    message = parse(raw)
    plain: list[str] = []
    html: list[str] = []
    sizes = {"plain": 0, "html": 0}
    attachments: list[dict[str, Any]] = []
    for part in walk(message):
        msg = part.part
        if _is_body_text(part):
            kind = "html" if msg.get_content_subtype() == "html" else "plain"
            (html if kind == "html" else plain).append(decoded_text(msg))
            sizes[kind] += _encoded_size(msg)
            continue
        if msg.get_content_maintype() == "multipart":
            continue  # an empty multipart has nothing to offer
        disposition = msg.get_content_disposition()
        content_id = msg.get("content-id")
        attachment: dict[str, Any] = {
            "id": part_id(message_id, part.section),
            "contentType": msg.get_content_type(),
            "encodedSize": _encoded_size(msg),
            "filename": msg.get_filename(),
            "embedded": bool(part.related and content_id),
            "inline": disposition == "inline",
        }
        if content_id:
            attachment["contentId"] = str(content_id).strip()
        attachments.append(attachment)

    headers: dict[str, list[str]] = {}
    for name, value in message.items():
        headers.setdefault(name.lower(), []).append(" ".join(str(value).split()))
    senders = addresses(message, "from")
    text: dict[str, Any] = {
        "id": part_id(message_id, "text"),
        "encodedSize": {k: sizes[k] for k, found in (("plain", plain), ("html", html)) if found},
        "hasMore": False,
    }
    if plain:
        text["plain"] = "\n".join(plain)
    if html:
        text["html"] = "\n".join(html)
    return {
        "messageId": header_text(message, "message-id"),
        "inReplyTo": header_text(message, "in-reply-to"),
        "references": (header_text(message, "references") or "").split() or None,
        "date": _date(message),
        "subject": header_text(message, "subject"),
        "from": senders[0] if senders else None,
        "sender": next(iter(addresses(message, "sender")), None),
        "to": addresses(message, "to"),
        "cc": addresses(message, "cc"),
        "bcc": addresses(message, "bcc"),
        "replyTo": addresses(message, "reply-to"),
        "headers": headers,
        "text": text,
        "attachments": attachments,
    }


def attachment(raw: bytes, section: str) -> AttachmentData | None:
    """The decoded bytes of one part, or None when the message has no such part."""
    for part in walk(parse(raw)):
        if part.section != section:
            continue
        msg = part.part
        return AttachmentData(msg.get_content_type(), msg.get_filename(), part_bytes(msg))
    return None


def part_bytes(msg: Message) -> bytes:
    """A part's decoded content; an attached message is the message itself (.eml)."""
    if msg.get_content_maintype() == "message":
        inner = msg.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        return first.as_bytes() if isinstance(first, Message) else b""
    payload = msg.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
