"""A received message, without I/O: its headers, the trace lines the door adds, loops and
automated mail.

The stored copy is the client's bytes with two fields prepended, as an MTA does
(RFC 5321 4.4, RFC 8601): ``Authentication-Results`` with this door's verdicts and
``Received`` naming this door (``by <mx hostname> (mailgate)``), which is also how a
message that already went through the door is recognised.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime

from mailgate_common.bounces.autoreply import looks_like_autoreply
from mailgate_common.bounces.mime import header_text
from mailgate_common.events import utcnow
from mailgate_common.mime import split_header_block

# Postfix's hopcount_limit: more Received fields than this is a loop somewhere.
MAX_HOPS = 50
# Passes through this very door: mail an application forwarded back into a route
# once or twice is fine, more is a loop between routes.
MAX_OWN_HOPS = 3
LOOP = "554 5.4.6 Routing loop detected: too many Received headers"
_BODY_SAMPLE = 2000  # bytes of the body read for vacation wording
_RECEIVED = re.compile(rb"(?im)^received[ \t]*:")
_CONTINUATION = re.compile(rb"\r?\n[ \t]+")


def headers_of(raw: bytes) -> Message:
    """The header block only (compat32: values as written; the body is never parsed here)."""
    block, _ = split_header_block(raw)
    return BytesHeaderParser(policy=compat32).parsebytes(block + b"\r\n")


def _unfolded_received(raw: bytes) -> list[bytes]:
    block, _ = split_header_block(raw)
    unfolded = _CONTINUATION.sub(b" ", block)
    return [line for line in unfolded.splitlines() if _RECEIVED.match(line)]


def own_stamp(hostname: str) -> bytes:
    return f"by {hostname} (mailgate)".encode().lower()


def loop_reply(raw: bytes, hostname: str) -> str | None:
    """``LOOP`` when the message went round too often, else None."""
    received = _unfolded_received(raw)
    stamp = own_stamp(hostname)
    if len(received) > MAX_HOPS or sum(stamp in line.lower() for line in received) >= MAX_OWN_HOPS:
        return LOOP
    return None


def received_field(*, helo: str | None, ip: str, hostname: str, tls: str | None, message_id: str,
                   recipient: str | None) -> bytes:
    """RFC 5321 4.4's trace field for this hop (one recipient named only when there is one)."""
    client = _printable(helo or "unknown")[:255]
    protocol = "ESMTPS" if tls else "ESMTP"
    for_clause = f"\r\n\tfor <{_printable(recipient)}>" if recipient else ""
    tls_note = f" ({tls})" if tls else ""
    return (f"Received: from {client} ([{ip}])\r\n\tby {hostname} (mailgate) with {protocol}{tls_note}"
            f" id {message_id}{for_clause};\r\n\t{format_datetime(utcnow())}\r\n").encode()


def stored_copy(raw: bytes, *fields: bytes) -> bytes:
    """``raw`` with trace fields on top, in the client's line endings."""
    top = b"".join(fields)
    if b"\r\n" not in raw[:2000] and b"\n" in raw[:2000]:
        top = top.replace(b"\r\n", b"\n")
    return top + raw


def automated(raw: bytes, headers: Message, *, null_sender: bool, hostname: str) -> str | None:
    """Why no automatic reply must answer this message, or None for mail a person sent.

    "bounce": a delivery report or anything from the null sender; "auto-replied" and
    "auto-generated": RFC 3834 (and vendor) auto-reply marks or vacation wording;
    "list": mailing-list and bulk mail; "mailgate": it already passed this door.
    """
    content_type = header_text(headers, "Content-Type").lower()
    if null_sender or "multipart/report" in content_type or "message/delivery-status" in content_type:
        return "bounce"
    submitted = header_text(headers, "Auto-Submitted").strip().lower()
    if submitted and not submitted.startswith("no"):
        return "auto-replied" if submitted.startswith("auto-replied") else "auto-generated"
    _, body = split_header_block(raw)
    sample = body[:_BODY_SAMPLE].decode("utf-8", "replace")
    if looks_like_autoreply(headers, sample):
        return "auto-replied"
    precedence = header_text(headers, "Precedence").strip().lower()
    if precedence in ("bulk", "list", "junk") or headers.get("List-Id") is not None \
            or headers.get("List-Unsubscribe") is not None:
        return "list"
    stamp = own_stamp(hostname)
    if any(stamp in line.lower() for line in _unfolded_received(raw)):
        return "mailgate"
    return None


def message_id_of(headers: Message) -> str | None:
    value = " ".join(header_text(headers, "Message-ID").split())
    return value[:998] or None


def subject_of(headers: Message) -> str | None:
    if headers.get("Subject") is None:
        return None
    return _printable(header_text(headers, "Subject"))[:998]


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)
