"""Stored templates over SMTP: ``X-Mailgate-Template`` renders the message before it is queued.

A submission carrying ``X-Mailgate-Template: <template id>`` (and optionally
``X-Mailgate-Template-Params: <JSON object>``) is rendered with the same rules as the REST
submit (``mailgate_common.templates.apply``): the template's subject replaces the Subject (when
the template has one), its text/html (and preheader, inlined CSS) replace the body, and the
original message's attachments are kept.  The context is the authenticated account, the params
and ``rcpt`` = the first To address.  Both headers are removed from what is sent.

The params header is a JSON object written either as is (its first character is ``{``) or as
base64 of UTF-8 JSON (anything else; base64 never starts with ``{``): raw JSON is handy from
swaks, base64 survives any client library's header encoding.  Each header may appear once.

Every refusal happens at DATA, before anything is queued, with RFC 3463's ``5.6.0`` ("other or
undefined media error"): the problem is in the message's content (a template reference it
carries, its params, what they render to), not in the envelope (5.1.x), the mail system (5.3.x)
or security policy (5.7.x), and retrying the same message cannot succeed.
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64decode
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from mailgate_common.db.models import Account, Template
from mailgate_common.mime import MAX_LINE, header_text, multipart, split_header_block, text_part
from mailgate_common.templates import RenderError
from mailgate_common.templates import apply as shared
from mailgate_common.text import clean_text
from mailgate_smtp_ingress.message import TEMPLATE_HEADERS, Rejected

TEMPLATE_HEADER, PARAMS_HEADER = TEMPLATE_HEADERS

_MARK = b"x-mailgate-template"
_FIELD = re.compile(rb"^(x-mailgate-template(?:-params)?)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                    re.IGNORECASE | re.MULTILINE)
_TEMPLATE_ID = re.compile(r"[!-~]{1,256}")
# Top-level content headers describe the body being replaced.
_BODY_HEADERS = frozenset({"subject", "content-type", "content-transfer-encoding",
                           "content-disposition", "content-id", "content-description"})
_WIRE = policy.compat32.clone(linesep="\r\n")


@dataclass(frozen=True)
class TemplateAsk:
    template_id: str
    params: dict[str, Any]


def _reject(text: str) -> Rejected:
    return Rejected(f"550 5.6.0 {text}")


def requested(data: bytes) -> TemplateAsk | None:
    """The template a message asks for (None: none, the common case); Rejected if malformed."""
    block = split_header_block(data)[0]
    # A plain substring test first: a few µs per message without the header.
    if _MARK not in block.lower() or (found := _FIELD.search(block)) is None:
        return None
    values: dict[str, list[bytes]] = {TEMPLATE_HEADER.lower(): [], PARAMS_HEADER.lower(): []}
    for match in _FIELD.finditer(block, found.start()):
        # RFC 5322 unfolding: only the line breaks go, the whitespace after them stays.
        values[match.group(1).decode("ascii").lower()].append(re.sub(rb"\r?\n", b"", match.group(2)).strip())
    ids, params = values[TEMPLATE_HEADER.lower()], values[PARAMS_HEADER.lower()]
    if len(ids) != 1:
        raise _reject(f"{TEMPLATE_HEADER} must appear once" if ids else
                      f"{PARAMS_HEADER} needs a {TEMPLATE_HEADER} header")
    if len(params) > 1:
        raise _reject(f"{PARAMS_HEADER} must appear at most once")
    template_id = ids[0].decode("ascii", "replace")
    if not _TEMPLATE_ID.fullmatch(template_id):
        raise _reject(f"{TEMPLATE_HEADER} is not a valid template id")
    return TemplateAsk(template_id, parse_params(params[0]) if params else {})


def parse_params(value: bytes) -> dict[str, Any]:
    """The params header's JSON object: raw JSON or base64 of it."""
    try:
        if value.startswith(b"{"):
            text = value.decode("utf-8")
            if "=?" in text:
                # Mail libraries (Python's email among them) write non-ASCII header text as
                # RFC 2047 encoded words; the header is unstructured, so they are decoded.
                text = str(make_header(decode_header(text)))
        else:
            text = b64decode(b"".join(value.split()), validate=True).decode("utf-8")
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _reject(f"{PARAMS_HEADER} is not valid JSON: {exc.msg} at character {exc.pos}") from exc
    except (binascii.Error, ValueError, LookupError, HeaderParseError) as exc:
        # binascii.Error: not base64; UnicodeDecodeError (a ValueError): not UTF-8.
        raise _reject(f"{PARAMS_HEADER} is neither a JSON object nor base64 of one") from exc
    if not isinstance(params, dict):
        raise _reject(f"{PARAMS_HEADER} must be a JSON object")
    return params


def not_found(template_id: str) -> str:
    # The id is checked printable ASCII without spaces, so safe to echo.
    return f"550 5.6.0 Template [{template_id}] was not found for this account"


def render_failed(error: RenderError) -> str:
    message = " ".join(error.message.split())[:200].encode("ascii", "replace").decode()
    return f"550 5.6.0 Failed rendering {error.part} template: {message}"


def _leaves(part: Message) -> Iterator[Message]:
    # Attached messages (message/rfc822) are kept whole, not searched.
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for sub in part.get_payload():
            assert isinstance(sub, Message)
            yield from _leaves(sub)
    else:
        yield part


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    if disposition == "attachment" or part.get_filename() is not None:
        return True
    if part.get("Content-ID") is not None:
        return True
    return part.get_content_maintype() != "text"


def attachments(original: Message) -> tuple[list[Message], list[Message]]:
    """(inline parts with a Content-ID, other attachments) of the original message; its text and
    html bodies are what the template replaces."""
    if not original.is_multipart():
        return [], []
    inline: list[Message] = []
    attached: list[Message] = []
    for leaf in _leaves(original):
        if not _is_attachment(leaf):
            continue
        disposition = (leaf.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        (inline if leaf.get("Content-ID") is not None and disposition != "attachment" else attached).append(leaf)
    return inline, attached


def _new(part: Message) -> Message:
    # The email.mime classes stamp every part; only the message's own header needs it.
    del part["MIME-Version"]
    return part


def _body(filled: shared.Filled, inline: list[Message], attached: list[Message]) -> Message:
    text, html = filled.text, filled.html
    if text is None and html is None:
        text = ""
    html_part = _new(text_part(html, "html")) if html is not None else None
    if inline and html_part is not None:
        html_part = _new(multipart("related", [html_part, *inline]))
    else:
        attached = [*inline, *attached]  # no html to show them in: plain attachments
    if text is not None and html_part is not None:
        body = _new(multipart("alternative", [_new(text_part(text, "plain")), html_part]))
    elif html_part is not None:
        body = html_part
    else:
        assert text is not None
        body = _new(text_part(text, "plain"))
    if attached:
        body = _new(multipart("mixed", [body, *attached]))
    return body


def _display_name(name: str) -> str:
    try:
        return str(make_header(decode_header(name)))  # RFC 2047 words, as a mail client shows them
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return name


def first_to(original: Message) -> tuple[str | None, str | None]:
    """(address, name) of the first To recipient, EmailEngine's ``rcpt``."""
    values = [header_text(v) for v in original.get_all("To", [])]
    for name, address in getaddresses(values):
        if address:
            return address, _display_name(name) if name else None
    return None, None


@dataclass(frozen=True)
class Applied:
    raw: bytes
    subject: str | None
    """The new subject, None when the template has none (the message's own stays)."""
    css_error: str | None


def apply(raw: bytes, template: Template, account: Account, params: dict[str, Any],
          service_url: str | None) -> Applied:
    """``raw`` (headers fixed by ``compose``) with the template rendered into it.

    Rejected (550 5.6.0 naming the part) when a part fails to render.
    """
    block, _ = split_header_block(raw)
    original = BytesParser(policy=policy.compat32).parsebytes(raw)
    address, name = first_to(original)
    ctx = shared.context(params=params, account_name=account.name, account_email=account.email,
                         service_url=service_url, rcpt_address=address, rcpt_name=name)
    try:
        filled = shared.fill({}, template, fmt=template.format, render_parts_too=True, ctx=ctx)
    except RenderError as exc:
        raise Rejected(render_failed(exc)) from exc
    subject = filled.subject
    replaced = _BODY_HEADERS if subject is not None else _BODY_HEADERS - {"subject"}
    kept = [line for line in _header_fields(block)
            if line.split(b":", 1)[0].strip().lower().decode("ascii", "replace") not in replaced]
    if subject is not None:
        # SMTP policy: RFC 2047 words for non-ASCII, folded under 78 columns.
        value = policy.SMTP.header_store_parse("Subject", " ".join(subject.split()))[1]
        kept.append(policy.SMTP.fold_binary("Subject", value))
    inline, attached = attachments(original)
    body = _body(filled, inline, attached).as_bytes(policy=_WIRE)
    return Applied(raw=b"".join(kept) + body,
                   subject=clean_text(subject, MAX_LINE) if subject is not None else None,
                   css_error=filled.css_error)


def _header_fields(block: bytes) -> list[bytes]:
    """Whole header fields (continuation lines kept with their field), each ending in CRLF."""
    fields: list[bytes] = []
    for line in block.splitlines():
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif line.strip():
            fields.append(line + b"\r\n")
    return fields
