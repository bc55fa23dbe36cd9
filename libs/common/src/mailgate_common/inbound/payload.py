"""The ``inboundMessage`` webhook body.

CONTRACT (filled in by the payload work; other code imports these names as they are):
``build(received, route, *, base_url, inline_max) -> dict`` is the event's
``data``: EmailEngine's messageNew shape (``from``, ``to``, ``cc``, ``replyTo``,
``subject``, ``messageId``, ``headers``, ``text{plain, html, strippedPlain}``,
``attachments`` inline as base64 up to ``inline_max`` bytes, else with a
``url`` under ``base_url``) plus ``envelope``, ``recipient{address, local,
tag, domain, captures}``, ``auth``, ``spam``, ``automated``, ``route``.
``raw_body(received)`` is the "raw" form's body (the MIME, message/rfc822).

The message comes from anyone on the internet, so ``build`` never raises: every
field is read on its own and a field the email package cannot make sense of is
left empty (or taken as sent) rather than failing the whole body.  Every string
leaves through ``clean_text`` (no NUL, no lone surrogate: PostgreSQL and msgspec
refuse them, and the body is stored in the delivery log).

Attachments are the leaf parts that are not body text, in MIME tree order (the
order of ``content.walk``: an attached message is one attachment, an inline
image inside multipart/related is one too).  ``attachment_parts`` is that list
and ``attachment(raw, n)`` its n-th entry's bytes: the API's
``/v1/inbound/messages/{id}/attachments/{n}`` serves the same n the body links.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, TypeVar

import quotequail  # type: ignore[import-untyped]

from mailgate_common.content import AttachmentData, Part, decoded_text, part_bytes, part_id, walk
from mailgate_common.events import iso
from mailgate_common.text import clean_text

log = logging.getLogger(__name__)

T = TypeVar("T")

# Caps on what a stranger's message can make us send (characters / entries).
ADDRESSES_MAX = 500  # per To / Cc / Reply-To
NAME_MAX = 256
ADDRESS_MAX = 320
HEADER_VALUE_MAX = 16 * 1024
HEADERS_MAX = 1000  # header fields kept in ``headers``
FILENAME_MAX = 1000
# Reply stripping looks for the quoted history in this many lines: quotequail's
# work is linear in what it scans, and a reply's own text is short.
STRIP_LINES = 1000


@dataclass(frozen=True)
class Received:
    """A stored inbound message (an ``inbound_messages`` row), as the payload needs it."""

    id: str
    raw: bytes
    received_at: datetime
    mail_from: str
    rcpt_to: list[str]
    remote_ip: str | None = None
    helo: str | None = None
    tls: str | None = None
    auth: dict[str, Any] = field(default_factory=dict)
    spam: dict[str, Any] = field(default_factory=dict)
    automated: str | None = None


@dataclass(frozen=True)
class RouteRef:
    """Which route took the message, for which recipients (one inboundMessage per route)."""

    id: str
    name: str
    recipients: list[str]
    tag: str | None = None
    captures: dict[str, str] = field(default_factory=dict)


def raw_body(received: Received) -> bytes:
    """The "raw" payload: the message exactly as stored (with its Authentication-Results)."""
    return received.raw


def parse(raw: bytes) -> EmailMessage:
    """The MIME tree; never raises.

    The feed parser records most defects instead of raising, but parts nested
    thousands deep exhaust its recursion: such a message keeps its header
    fields and has no parts.
    """
    for parser in (BytesParser, BytesHeaderParser):
        try:
            message = parser(policy=policy.default).parsebytes(raw)
        except Exception:
            log.debug("unparsable message", exc_info=True)
            continue
        if isinstance(message, EmailMessage):
            return message
    return EmailMessage()


def attachment_parts(message: Message) -> list[Part]:
    """The message's attachments (every leaf that is not body text), in tree order."""
    return [part for part in _parts(message) if _is_attachment(part.part)]


def _parts(message: Message) -> list[Part]:
    none: list[Part] = []
    return _safe(lambda: list(walk(message)), none)


def attachment(raw: bytes, index: int) -> AttachmentData | None:
    """The ``index``-th attachment (0-based, as the body's ``url`` counts), or None."""
    parts = attachment_parts(parse(raw))
    if not 0 <= index < len(parts):
        return None
    msg = parts[index].part
    return AttachmentData(
        _safe(msg.get_content_type, "application/octet-stream"), _filename(msg), _part_bytes(msg)
    )


def build(received: Received, route: RouteRef, *, base_url: str, inline_max: int) -> dict[str, Any]:
    """The ``data`` of an ``inboundMessage`` webhook for ``route`` (see the module docstring)."""
    base = base_url.rstrip("/")
    message = parse(received.raw)
    plain, html = _texts(message)
    senders = _addresses(message, "from")
    return {
        "id": received.id,
        "receivedAt": _safe(lambda: iso(received.received_at), None),
        "size": len(received.raw),
        "messageId": _header_text(message, "message-id"),
        "inReplyTo": _header_text(message, "in-reply-to"),
        "references": (_header_text(message, "references") or "").split() or None,
        "subject": _header_text(message, "subject", decode=True),
        "date": _date(message),
        "from": senders[0] if senders else None,
        "sender": next(iter(_addresses(message, "sender")), None),
        "replyTo": _addresses(message, "reply-to"),
        "to": _addresses(message, "to"),
        "cc": _addresses(message, "cc"),
        "headers": _headers(message),
        "text": {"plain": plain, "html": html, "strippedPlain": stripped_reply(plain), "hasMore": False},
        "attachments": _attachments(message, received.id, base, inline_max),
        "envelope": {
            "mailFrom": clean_text(received.mail_from),
            # Only this route's recipients: the others are Bcc-like, and may
            # belong to another application.
            "rcptTo": [clean_text(r) for r in route.recipients],
            "remoteIp": received.remote_ip,
            "helo": clean_text(received.helo) if received.helo is not None else None,
            "tls": received.tls,
        },
        "recipient": recipient(route),
        "auth": received.auth,
        "spam": received.spam or {"checked": False},
        "automated": received.automated is not None,
        "automatedReason": received.automated,
        "route": {"id": route.id, "name": route.name},
        "raw": {"url": f"{base}/v1/inbound/messages/{received.id}/raw"},
    }


def recipient(route: RouteRef) -> dict[str, Any]:
    """The address the route matched: ``local`` is the mailbox without its ``+tag``."""
    address = clean_text(route.recipients[0]) if route.recipients else ""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if route.tag is not None:
        # The route engine split the tag off at the first "+" (and may have lower-cased it).
        local = local.partition("+")[0]
    return {"address": address, "local": local, "tag": route.tag, "domain": domain.lower(),
            "captures": dict(route.captures)}


def stripped_reply(plain: str | None) -> str | None:
    """The reply without the quoted history ("On ... wrote:" and what follows)."""
    if plain is None:
        return None
    head, sep, _rest = _split_lines(plain, STRIP_LINES)
    try:
        # The limit past the head's length: quotequail would otherwise call the
        # line where the limit falls the start of a quote.
        segments = quotequail.quote(head, limit=STRIP_LINES + 1, quote_intro_line=True)
    except Exception:  # a library bug must not cost the message its webhook
        log.debug("quotequail failed", exc_info=True)
        return plain.strip()
    if len(segments) > 1 and segments[0][0]:
        return _without_trailing_quote(str(segments[0][1]))
    return _without_trailing_quote(plain) if not sep else plain.strip()


def _without_trailing_quote(text: str) -> str:
    """A top-posted reply without the "> " block under it (quotequail only finds intro lines).

    Interleaved answers keep their quotes: only a block that closes the text goes.
    """
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(">")):
        end -= 1
    return "\n".join(lines[:end]).strip() if end else text.strip()


def _split_lines(text: str, count: int) -> tuple[str, str, str]:
    """(the first ``count`` lines, the separator, the rest)."""
    at = -1
    for _ in range(count):
        at = text.find("\n", at + 1)
        if at == -1:
            return text, "", ""
    return text[:at], "\n", text[at + 1 :]


# --- fields ---------------------------------------------------------------


def _safe(read: Callable[[], T], fallback: T) -> T:
    """``read()``, or ``fallback`` when the email package chokes on the input."""
    try:
        return read()
    except Exception:
        log.debug("undecodable message field", exc_info=True)
        return fallback


def _raw_values(message: Message, name: str) -> list[str]:
    """A header's values as sent (unfolded), before any RFC 2047 decoding."""

    def read() -> list[str]:
        # raw_items gives the source text; the policy's parsed header objects
        # can raise on malformed structured headers, the source never does.
        return [" ".join(str(v).split()) for k, v in message.raw_items() if k.lower() == name]

    return _safe(read, [])


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded; a broken one stays as sent."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _header_text(message: Message, name: str, *, decode: bool = False) -> str | None:
    values = _raw_values(message, name)
    if not values:
        return None
    value = _decoded(values[0]) if decode else values[0]
    return clean_text(" ".join(value.split()), HEADER_VALUE_MAX)


def _addresses(message: Message, name: str) -> list[dict[str, str]]:
    values = _raw_values(message, name)
    if not values:
        return []
    # Split the source, then decode each name: a decoded "Doe, John" would split in two.
    none: list[tuple[str, str]] = []
    pairs = _safe(lambda: getaddresses(values), none)
    out: list[dict[str, str]] = []
    for display, address in pairs[:ADDRESSES_MAX]:
        if not address:
            continue
        entry = {"address": clean_text(address, ADDRESS_MAX)}
        decoded = clean_text(" ".join(_decoded(display).split()), NAME_MAX)
        if decoded:
            entry["name"] = decoded
        out.append(entry)
    return out


def _date(message: Message) -> str | None:
    value = _header_text(message, "date")
    if not value:
        return None

    def read() -> str | None:
        parsed = parsedate_to_datetime(value)
        return iso(parsed) if parsed.tzinfo else None

    return _safe(read, None)


def _headers(message: Message) -> dict[str, list[str]]:
    """EmailEngine's ``headers``: lower-case name -> values as sent (unfolded)."""
    out: dict[str, list[str]] = {}

    def read() -> list[tuple[str, str]]:
        return [
            (clean_text(name.strip().lower(), 200), clean_text(" ".join(str(value).split()), HEADER_VALUE_MAX))
            for name, value in list(message.raw_items())[:HEADERS_MAX]
        ]

    none: list[tuple[str, str]] = []
    for name, value in _safe(read, none):
        out.setdefault(name, []).append(value)
    return out


def _is_body_text(msg: Message) -> bool:
    if _safe(msg.get_content_type, "") not in ("text/plain", "text/html"):
        return False
    return _safe(msg.get_content_disposition, None) != "attachment" and not _filename(msg)


def _is_attachment(msg: Message) -> bool:
    if _is_body_text(msg):
        return False
    # An empty multipart (no parts found) has nothing to offer.
    return _safe(msg.get_content_maintype, "") != "multipart"


def _text_of(msg: Message) -> str:
    return clean_text(_safe(lambda: decoded_text(msg), ""))


def _texts(message: Message) -> tuple[str | None, str | None]:
    plain: list[str] = []
    html: list[str] = []
    for part in _parts(message):
        if _is_body_text(part.part):
            subtype = _safe(part.part.get_content_subtype, "plain")
            (html if subtype == "html" else plain).append(_text_of(part.part))
    return ("\n".join(plain) if plain else None), ("\n".join(html) if html else None)


def _filename(msg: Message) -> str | None:
    name = _safe(msg.get_filename, None)
    return clean_text(name, FILENAME_MAX) if name else None


def _content_id(msg: Message) -> str | None:
    values = _raw_values(msg, "content-id")
    return clean_text(values[0].strip(), ADDRESS_MAX) if values and values[0].strip() else None


def _part_bytes(msg: Message) -> bytes:
    return _safe(lambda: part_bytes(msg), b"")


def _attachments(message: Message, message_id: str, base: str, inline_max: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, part in enumerate(attachment_parts(message)):
        msg = part.part
        data = _part_bytes(msg)
        content_id = _content_id(msg)
        item: dict[str, Any] = {
            "id": part_id(message_id, part.section),
            "filename": _filename(msg),
            "contentType": _safe(msg.get_content_type, "application/octet-stream"),
            "size": len(data),
            "contentId": content_id,
            "inline": _safe(msg.get_content_disposition, None) == "inline",
            "embedded": bool(part.related and content_id),
        }
        if len(data) <= inline_max:
            item["content"] = base64.b64encode(data).decode("ascii")
        else:
            item["url"] = f"{base}/v1/inbound/messages/{message_id}/attachments/{n}"
        out.append(item)
    return out
