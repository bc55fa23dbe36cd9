"""Turning raw bytes into a message and pulling out the pieces bounce parsers look at.

Everything here is tolerant by design: bounces are produced by every MTA ever
written, many of them old and careless about MIME, so we never raise on bad input.
"""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
import html
import re
from dataclasses import dataclass, field
from email.message import Message

_MBOX_FROM = re.compile(rb"\AFrom [^\n]*\n")
_MAX_HEADER = 8192
_BOUNDARY = re.compile(rb"(?i)\bboundary[ \t]*=")
MAX_MULTIPARTS = 32
# Parts looked at, and returned originals kept, per message.
MAX_PARTS = 100
MAX_ORIGINALS = 5
_TAG = re.compile(r"<[^>]+>")
_ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "text/rfc822-headers",
        "message/global",
        "message/global-headers",
        "message/rfc822-headers",
    }
)
REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
)


def normalise_newlines(raw: bytes) -> bytes:
    """CRLF and bare CR (classic Mac OS) become LF so one set of regexes fits all."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # An mbox "From " separator line is not a header and would end the header block.
    return _MBOX_FROM.sub(b"", raw.lstrip(b"\n"), count=1)


def load(raw: bytes) -> Message:
    raw = normalise_newlines(raw)
    for n, m in enumerate(_BOUNDARY.finditer(raw)):
        if n == MAX_MULTIPARTS:
            # The stdlib parser tests every line against each open boundary: thousands
            # of nested multiparts cost seconds (then overflow the stack).  No bounce
            # has this many; what follows is read as the last part's text.
            raw = raw[: m.start()]
            break
    # compat32 never raises on malformed headers, which the modern policy sometimes does.
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header_text(msg: Message, name: str) -> str:
    """Decoded, unfolded header value ('' when absent)."""
    value = msg.get(name)
    if value is None:
        return ""
    # Read up to a length no real header reaches (see text.MAX_LINE).
    value = str(value)[:_MAX_HEADER]
    try:
        parts = email.header.decode_header(value)
        text = "".join(
            p.decode(cs or "utf-8", "replace") if isinstance(p, bytes) else p for p, cs in parts
        )
    except (LookupError, ValueError, TypeError):
        text = value
    return " ".join(text.split())


def part_text(part: Message) -> str:
    """The decoded text of a leaf part, whatever its declared charset."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    if charset.lower() in ("us-ascii", "ascii"):
        # Lots of MTAs send 8-bit text labelled us-ascii; utf-8 is the better guess.
        charset = "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def html_to_text(text: str) -> str:
    text = _drop_scripts(text)
    text = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h\d)>", "\n", text)
    return html.unescape(_TAG.sub(" ", text))


_SCRIPT_START = re.compile(r"(?i)<(script|style)\b")
_SCRIPT_END = {tag: re.compile(f"(?i)</{tag}>") for tag in ("script", "style")}


def _drop_scripts(text: str) -> str:
    """Text without its <script> and <style> elements (each becomes a space).

    Done with ``find``: the regex ``<(script|style)\\b.*?</\\1>`` rescanned the rest
    of the text from every unclosed opening tag (a row of "<script>" took seconds).
    """
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    for m in _SCRIPT_START.finditer(text):
        tag = m.group(1).lower()
        if m.start() < pos or tag in unclosed:
            continue
        end = _SCRIPT_END[tag].search(text, m.end())
        if end is None:
            unclosed.add(tag)  # no later one of this tag can be closed either
            continue
        out.append(text[pos : m.start()])
        out.append(" ")
        pos = end.end()
    out.append(text[pos:])
    return "".join(out)


@dataclass
class Parts:
    """The parts of a bounce sorted by the role they play."""

    notice: list[str] = field(default_factory=list)  # human-readable text of the bounce
    reports: list[Message] = field(default_factory=list)  # delivery-status parts
    feedback: list[Message] = field(default_factory=list)  # ARF feedback-report parts
    originals: list[Message] = field(default_factory=list)  # headers of returned messages
    types: list[str] = field(default_factory=list)
    attached: list[Message] = field(default_factory=list)  # whole returned messages


def split_parts(msg: Message) -> Parts:
    """Walk the MIME tree once, never descending into returned original messages."""
    out = Parts()
    _walk(msg, out, top=True)
    return out


def _walk(part: Message, out: Parts, *, top: bool) -> None:
    if len(out.types) >= MAX_PARTS:
        return
    ctype = part.get_content_type()
    out.types.append(ctype)
    if ctype in REPORT_TYPES:
        out.reports.append(part)
        return
    if ctype == "message/feedback-report":
        out.feedback.append(part)
        return
    if ctype in _ORIGINAL_TYPES:
        if len(out.originals) >= MAX_ORIGINALS:
            return
        headers = original_headers(part)
        if headers is not None and isinstance(part.get_payload(), list):
            out.attached.append(headers)
        if headers is not None:
            out.originals.append(headers)
        return
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, out, top=False)
        return
    if ctype.startswith(("text/", "multipart/")) or (
        top and part.get_content_maintype() not in ("image", "audio", "video")
    ):
        disposition = (part.get("Content-Disposition") or "").lower()
        text = part_text(part)
        if "attachment" in disposition and _looks_like_message(text):
            # A returned message attached as text/plain rather than message/rfc822.
            out.originals.append(parse_headers(text))
            return
        out.notice.append(text)


_HEADER_LINE = re.compile(r"^[A-Za-z][\w-]*:[ \t]", re.M)


def _looks_like_message(text: str) -> bool:
    head = text.lstrip()[:2000]
    return (
        bool(re.match(r"(?i)(return-path|received|from|message-id|date|subject|to):", head))
        and len(_HEADER_LINE.findall(head)) >= 3
    )


def original_headers(part: Message) -> Message | None:
    """Headers of a returned original message, from any of the container types."""
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    text = part_text(part)
    return parse_headers(text) if text.strip() else None


def parse_headers(text: str) -> Message:
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip())
