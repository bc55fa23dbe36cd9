"""Building and normalising RFC 5322 messages with the standard ``email`` package.

``build_message`` turns a structured submit body into MIME (UTF-8 bodies,
RFC 2047 headers, base64 attachments, inline ``cid`` images, text+html
alternatives).  ``prepare_raw`` takes a message a client composed itself and
only fixes its header block (drop Bcc, add Message-ID/Date/MIME-Version),
leaving the body bytes untouched so signatures stay valid.

Anything a caller supplies that could smuggle a header (CR or LF in a value,
a bad header name) raises :class:`InvalidMessage` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime, getaddresses

from mailgate_common.submission import Address, SubmitRequest, as_list

HEADER_NAME = re.compile(r"^[!-9;-~]+$")
# Headers the structured fields own; a custom header may not override them.
RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date", "mime-version",
     "content-type", "content-transfer-encoding"}
)
MAX_LINE = 998


class InvalidMessage(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class BuiltMessage:
    raw: bytes
    message_id: str
    envelope_from: str
    envelope_to: list[str]
    subject: str | None
    extra_headers: dict[str, str] = field(default_factory=dict)


def _check_value(field_name: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise InvalidMessage(field_name, "must not contain line breaks")
    return value


def _domain_ascii(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidMessage("domain", f"invalid domain {domain!r}") from exc


# RFC 5322 dot-atom local part; non-ASCII letters are allowed for SMTPUTF8 (RFC 6531).
LOCAL_PART = re.compile(r'[^\s"(),:;<>@\[\\\].]+(\.[^\s"(),:;<>@\[\\\].]+)*')
QUOTED_LOCAL_PART = re.compile(r'"([^"\\\r\n]|\\.)+"')
DOMAIN_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def normalize_address(field_name: str, address: str) -> str:
    """Validate an addr-spec; IDN domains become punycode (local parts stay UTF-8)."""
    address = _check_value(field_name, address.strip())
    local, sep, domain = address.rpartition("@")
    invalid = InvalidMessage(field_name, f"{address!r} is not a valid email address")
    if not sep or not local or not domain or len(address) > 320:
        raise invalid
    if not (LOCAL_PART.fullmatch(local) or QUOTED_LOCAL_PART.fullmatch(local)) or len(local) > 64:
        raise invalid
    if domain.startswith("[") and domain.endswith("]"):
        return address
    if "." not in domain and domain != "localhost":
        raise InvalidMessage(field_name, f"{address!r} has no valid domain")
    domain = _domain_ascii(domain)
    if not all(DOMAIN_LABEL.fullmatch(label) for label in domain.split(".")):
        raise invalid
    return f"{local}@{domain}"


def _header_address(field_name: str, addr: Address) -> HeaderAddress:
    spec = normalize_address(f"{field_name}.address", addr.address)
    name = _check_value(f"{field_name}.name", addr.name or "")
    local, _, domain = spec.rpartition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)


def _addresses(field_name: str, value: list[Address]) -> list[HeaderAddress]:
    return [_header_address(f"{field_name}[{i}]", a) for i, a in enumerate(value)]


def new_message_id(from_address: str) -> str:
    domain = from_address.rpartition("@")[2] or "mailgate.local"
    return f"<{uuid.uuid4()}@{domain}>"


def _message_id(field_name: str, value: str) -> str:
    value = _check_value(field_name, value.strip())
    if not value.startswith("<"):
        value = f"<{value}>"
    if not re.fullmatch(r"<[^<>\s@]+@[^<>\s@]+>", value):
        raise InvalidMessage(field_name, "must look like <local@domain>")
    return value


def _decode_base64(field_name: str, data: str) -> bytes:
    try:
        return base64.b64decode(data.encode("ascii"), validate=False)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidMessage(field_name, "is not valid base64") from exc


def build_message(
    req: SubmitRequest,
    *,
    default_from: Address | None = None,
    extra_headers: dict[str, str] | None = None,
    now: datetime | None = None,
    attach_messages: Iterable[tuple[bytes, str]] = (),
) -> BuiltMessage:
    """Compose MIME from a structured submit body (``req.raw`` must be None)."""
    sender = req.from_ or default_from
    if sender is None:
        raise InvalidMessage("from", "is required (the account has no default address)")
    from_addr = _header_address("from", sender)
    to = _addresses("to", as_list(req.to))
    cc = _addresses("cc", as_list(req.cc))
    bcc = _addresses("bcc", as_list(req.bcc))
    reply_to = _addresses("replyTo", as_list(req.reply_to))

    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = from_addr
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if reply_to:
        msg["Reply-To"] = reply_to
    subject = req.subject
    if subject is not None:
        msg["Subject"] = _check_value("subject", subject)
    message_id = (
        _message_id("messageId", req.message_id)
        if req.message_id
        else new_message_id(from_addr.addr_spec)
    )
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(now or datetime.now(UTC))

    for name, value in {**(extra_headers or {}), **req.headers}.items():
        label = f"headers.{name}"
        if not HEADER_NAME.fullmatch(name) or len(name) > 76:
            raise InvalidMessage(label, "is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidMessage(label, "is set by its own field, not as a custom header")
        msg[name] = _check_value(label, value)

    _set_body(msg, req)
    for part in msg.walk():
        if part is not msg:
            # The email package stamps every added part; only the top level needs it.
            del part["MIME-Version"]
    for raw_message, filename in attach_messages:
        # message/rfc822 (a forward as attachment): 7bit/8bit as RFC 2046 requires, never base64.
        inner = BytesParser(policy=policy.SMTP).parsebytes(raw_message)
        msg.add_attachment(inner, filename=_check_value("attachments", filename))
        payload = msg.get_payload()
        assert isinstance(payload, list)
        added = payload[-1]
        assert isinstance(added, EmailMessage)
        del added["MIME-Version"]

    envelope_from = sender.address
    recipients = [a.addr_spec for a in (*to, *cc, *bcc)]
    if req.envelope is not None:
        if req.envelope.from_:
            envelope_from = req.envelope.from_
        if req.envelope.to:
            recipients = list(req.envelope.to)
    envelope_from = normalize_address("envelope.from", envelope_from)
    envelope_to = _unique(
        normalize_address(f"envelope.to[{i}]", a) for i, a in enumerate(recipients)
    )
    if not envelope_to:
        raise InvalidMessage("to", "at least one recipient (to, cc, bcc or envelope.to) is required")
    return BuiltMessage(
        raw=msg.as_bytes(),
        message_id=message_id,
        envelope_from=envelope_from,
        envelope_to=envelope_to,
        subject=subject,
    )


def _set_body(msg: EmailMessage, req: SubmitRequest) -> None:
    text, html = req.text, req.html
    inline = [a for a in req.attachments if a.cid]
    attached = [a for a in req.attachments if not a.cid]
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(text, charset="utf-8", cte=_cte(text))
        if html is not None:
            msg.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
    else:
        assert html is not None
        msg.set_content(html, subtype="html", charset="utf-8", cte=_cte(html))
    if inline:
        html_part = _html_part(msg)
        if html_part is None:
            raise InvalidMessage("attachments", "inline (cid) attachments need an html body")
        for i, att in enumerate(inline):
            maintype, subtype = _content_type(f"attachments[{i}].contentType", att.content_type)
            cid = _check_value(f"attachments[{i}].cid", att.cid or "").strip("<>")
            html_part.add_related(
                _decode_base64(f"attachments[{i}].content", att.content),
                maintype=maintype,
                subtype=subtype,
                cid=f"<{cid}>",
                filename=att.filename,
                disposition="inline",
            )
    for i, att in enumerate(attached):
        maintype, subtype = _content_type(f"attachments[{i}].contentType", att.content_type)
        if att.filename is not None:
            _check_value(f"attachments[{i}].filename", att.filename)
        msg.add_attachment(
            _decode_base64(f"attachments[{i}].content", att.content),
            maintype=maintype,
            subtype=subtype,
            filename=att.filename,
            disposition=att.content_disposition or "attachment",
        )


def _cte(body: str) -> str:
    # 8bit bodies break on relays without 8BITMIME; QP keeps mostly-ASCII text readable.
    if body.isascii() and all(len(line) <= MAX_LINE for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"


def _html_part(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None


def _content_type(field_name: str, value: str | None) -> tuple[str, str]:
    value = _check_value(field_name, value or "application/octet-stream")
    maintype, sep, subtype = value.partition("/")
    if not sep or not re.fullmatch(r"[\w.+-]+", maintype) or not re.fullmatch(r"[\w.+-]+", subtype):
        raise InvalidMessage(field_name, f"{value!r} is not a MIME type")
    return maintype.lower(), subtype.lower()


def _unique(values: Iterable[str]) -> list[str]:
    """Drop repeated addresses (case-insensitively), keeping first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        if value.lower() not in seen:
            seen.add(value.lower())
            out.append(value)
    return out


# --- raw messages -----------------------------------------------------------


@dataclass
class PreparedRaw:
    raw: bytes
    message_id: str
    subject: str | None
    header_from: str | None
    header_recipients: list[str]
    removed_headers: dict[str, str]


def split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first empty line; tolerate LF-only input."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(sep)
        if index != -1:
            return raw[: index + len(sep) // 2], raw[index + len(sep) // 2 :]
    return raw, b""


def _header_lines(block: bytes) -> list[bytes]:
    """Whole header fields, folded continuation lines kept with their field."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    return fields


def prepare_raw(
    raw: bytes,
    *,
    drop: tuple[str, ...] = (),
    now: datetime | None = None,
) -> PreparedRaw:
    """Strip Bcc (and ``drop`` headers), add Message-ID, Date, MIME-Version when missing."""
    block, body = split_header_block(raw)
    if not block.strip() or b":" not in block.split(b"\n", 1)[0]:
        raise InvalidMessage("raw", "does not start with a header block")
    headers = BytesHeaderParser(policy=policy.default).parsebytes(block + b"\r\n")
    removing = {"bcc", *(d.lower() for d in drop)}
    kept: list[bytes] = []
    removed: dict[str, str] = {}
    for line in _header_lines(block):
        name = line.split(b":", 1)[0].decode("ascii", "replace").strip().lower()
        if name in removing:
            value = line.split(b":", 1)[1].decode("utf-8", "replace").strip()
            removed[name] = " ".join(value.split())
            continue
        kept.append(line if line.endswith(b"\n") else line + b"\r\n")
    added: list[bytes] = []
    message_id = headers.get("Message-ID")
    if not message_id:
        from_values = getaddresses([str(headers.get("From", ""))])
        message_id = new_message_id(from_values[0][1] if from_values else "")
        added.append(f"Message-ID: {message_id}\r\n".encode())
    if not headers.get("Date"):
        added.append(f"Date: {format_datetime(now or datetime.now(UTC))}\r\n".encode())
    if not headers.get("MIME-Version"):
        added.append(b"MIME-Version: 1.0\r\n")
    eol = b"\r\n" if b"\r\n" in block else b"\n"
    out = b"".join(added + kept)
    if eol == b"\n":
        out = out.replace(b"\r\n", b"\n")
    recipients = [
        addr for _, addr in getaddresses(
            [str(v) for key in ("To", "Cc", "Bcc") for v in headers.get_all(key, [])]
        ) if addr
    ]
    from_header = getaddresses([str(headers.get("From", ""))])
    subject = headers.get("Subject")
    return PreparedRaw(
        raw=out + (body if body.startswith((b"\r\n", b"\n")) else eol + body),
        message_id=str(message_id).strip(),
        subject=str(subject) if subject is not None else None,
        header_from=from_header[0][1] if from_header and from_header[0][1] else None,
        header_recipients=recipients,
        removed_headers=removed,
    )
