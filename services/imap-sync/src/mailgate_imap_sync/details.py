"""What a ``messageNew`` webhook tells beyond the index: EmailEngine's content fields.

Fetched for announced mail only (a first sync stays silent and cheap), in one
``UID FETCH (BODYSTRUCTURE BODY.PEEK[HEADER])`` per batch:

* ``attachments`` and ``text{id, encodedSize}`` from the BODYSTRUCTURE, with
  the same part numbering and ids as the message JSON the API serves
  (``mailgate_common.content``), so ``text.id`` and attachment ids work with
  ``GET …/text/{id}`` and ``GET …/attachment/{id}``;
* ``sender``, ``replyTo``, ``bcc`` and the ``headers`` the ``notifyHeaders``
  setting lists (``*``: all) from the header block;
* only when the ``notifyText`` setting is on, the text parts themselves
  (``BODY.PEEK[section]<0.n>``, never the attachments), cut at
  ``notifyTextSize`` bytes with ``hasMore`` telling it was cut.
"""

from __future__ import annotations

import binascii
import logging
import time
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import collapse_rfc2231_value, decode_rfc2231
from typing import Any

from mailgate_common import content, service_settings
from mailgate_common.db import Database
from mailgate_common.text import clean_text
from mailgate_imap_sync import parse, sexp
from mailgate_imap_sync.client import Connection

log = logging.getLogger(__name__)

FETCH_DETAILS = "UID BODYSTRUCTURE BODY.PEEK[HEADER]"
# Where the server has them: Gmail's ids and labels, RFC 8474's object ids.
GMAIL_ITEMS = " X-GM-MSGID X-GM-THRID X-GM-LABELS"
OBJECTID_ITEMS = " EMAILID THREADID"
NOTIFY_KEYS = ["notifyText", "notifyTextSize", "notifyHeaders"]
# notifyTextSize 0 means "all": still bounded, as EmailEngine bounds it.
TEXT_MAX = 2 * 1024 * 1024
# Transfer encodings grow text up to 3x (quoted-printable); fetch that much.
ENCODED_GROWTH = 3
SETTINGS_TTL = 5.0
ATTACHMENTS_MAX = 200


@dataclass(frozen=True)
class Notify:
    text: bool = False
    text_size: int = 0
    headers: tuple[str, ...] = ()


_cached: tuple[float, Notify] | None = None


async def notify_settings(db: Database) -> Notify:
    """The notify settings, read at most every few seconds (one query per replica)."""
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < SETTINGS_TTL:
        return _cached[1]
    async with db.sessions() as session:
        values = await service_settings.read(session, NOTIFY_KEYS)
    size = values.get("notifyTextSize")
    headers = values.get("notifyHeaders")
    result = Notify(
        text=bool(values.get("notifyText")),
        text_size=size if isinstance(size, int) and size > 0 else 0,
        headers=tuple(h.lower() for h in headers if isinstance(h, str)) if isinstance(headers, list) else (),
    )
    _cached = (now, result)
    return result


@dataclass
class Leaf:
    section: str
    content_type: str
    params: dict[str, str]
    content_id: str | None
    encoding: str
    size: int
    disposition: str | None
    filename: str | None
    related: bool

    @property
    def is_body_text(self) -> bool:
        return (self.content_type in ("text/plain", "text/html") and self.disposition != "attachment"
                and not self.filename)


def _pairs(value: Any) -> dict[str, str]:
    if not isinstance(value, list):
        return {}
    return {str(k).lower(): v for k, v in zip(value[::2], value[1::2], strict=False)
            if isinstance(k, str) and isinstance(v, str)}


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # a malformed encoded word: keep it as sent
        return value


def _filename(params: dict[str, str], disposition: dict[str, str]) -> str | None:
    for source, key in ((disposition, "filename"), (params, "name")):
        if key in source:
            return clean_text(_decoded(source[key]), parse.PATH_MAX)
        starred = source.get(key + "*")
        if starred is not None:
            try:
                return clean_text(str(collapse_rfc2231_value(decode_rfc2231(starred))), parse.PATH_MAX)
            except Exception:
                return clean_text(starred, parse.PATH_MAX)
    return None


def leaves(structure: Any, section: str = "", related: bool = False) -> list[Leaf]:
    """The leaf parts of a BODYSTRUCTURE with their section numbers (an attached
    message is a leaf, as in ``content.walk``)."""
    if not isinstance(structure, list) or not structure:
        return []
    if isinstance(structure[0], list):
        # The parts come first, then the subtype, then extension data (lists too).
        count = next((i for i, c in enumerate(structure) if not isinstance(c, list)), len(structure))
        children = structure[:count]
        subtype = structure[count] if count < len(structure) and isinstance(structure[count], str) else ""
        inner = related or subtype.lower() == "related"
        found: list[Leaf] = []
        for i, child in enumerate(children[:ATTACHMENTS_MAX], start=1):
            found += leaves(child, f"{section}.{i}" if section else str(i), inner)
        return found
    fields = structure + [None] * 12
    maintype, subtype = str(fields[0] or "application").lower(), str(fields[1] or "octet-stream").lower()
    params = _pairs(fields[2])
    if maintype == "text":
        extension = 8
    elif (maintype, subtype) == ("message", "rfc822"):
        extension = 10
    else:
        extension = 7
    disposition = fields[extension + 1]
    kind = str(disposition[0]).lower() if isinstance(disposition, list) and disposition else None
    disposition_params = _pairs(disposition[1]) if isinstance(disposition, list) and len(disposition) > 1 else {}
    try:
        size = int(fields[6] or 0)
    except (TypeError, ValueError):
        size = 0
    return [Leaf(
        section=section or "1", content_type=f"{maintype}/{subtype}", params=params,
        content_id=clean_text(fields[3], parse.MESSAGE_ID_MAX) if isinstance(fields[3], str) else None,
        encoding=str(fields[5] or "7bit").lower(), size=size, disposition=kind,
        filename=_filename(params, disposition_params), related=related,
    )]


def describe(message_id: str, parts: list[Leaf]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """EmailEngine's ``attachments`` and ``text`` (without the text itself)."""
    attachments: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    for leaf in parts:
        if leaf.is_body_text:
            kind = leaf.content_type.split("/")[1]
            sizes[kind] = sizes.get(kind, 0) + leaf.size
            continue
        attachment: dict[str, Any] = {
            "id": content.part_id(message_id, leaf.section),
            "contentType": leaf.content_type,
            "encodedSize": leaf.size,
            "filename": leaf.filename,
            "embedded": bool(leaf.related and leaf.content_id),
            "inline": leaf.disposition == "inline",
        }
        if leaf.content_id:
            attachment["contentId"] = leaf.content_id
        attachments.append(attachment)
    text = {"id": content.part_id(message_id, "text"),
            "encodedSize": {k: sizes[k] for k in ("plain", "html") if k in sizes}}
    return attachments, text


def header_fields(header: bytes | None, wanted: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, list[str]] | None]:
    """sender / reply-to / bcc, and the headers ``wanted`` lists (None: none asked for)."""
    if not header:
        return {}, ({} if wanted else None)
    message = BytesHeaderParser(policy=default_policy).parsebytes(header[:parse.HEADER_BLOCK_MAX])

    def text(name: str) -> str | None:
        try:
            value = message.get(name)
        except Exception:
            return None
        return clean_text(str(value)) if value is not None else None

    senders = parse.addresses(text("sender"))
    fields = {"sender": senders[0] if senders else None,
              "reply_to": parse.addresses(text("reply-to")), "bcc": parse.addresses(text("bcc"))}
    if not wanted:
        return fields, None
    headers: dict[str, list[str]] = {}
    every = "*" in wanted
    for name in message.keys():
        key = name.lower()
        if key in headers or not (every or key in wanted):
            continue
        try:
            values = [" ".join(str(v).split()) for v in message.get_all(name, [])]
        except Exception:
            continue
        headers[key] = [clean_text(v, parse.REFERENCES_MAX) for v in values]
    return fields, headers


def decode_text(data: bytes, leaf: Leaf) -> str:
    """A (possibly cut) text part's bytes as text: transfer encoding, then charset."""
    if leaf.encoding == "base64":
        compact = b"".join(data.split())
        compact = compact[:len(compact) - len(compact) % 4]
        try:
            data = binascii.a2b_base64(compact)
        except binascii.Error:
            data = b""
    elif leaf.encoding == "quoted-printable":
        data = binascii.a2b_qp(data)
    charset = leaf.params.get("charset") or "utf-8"
    try:
        decoded = data.decode(charset, errors="replace")
    except LookupError:
        decoded = data.decode("utf-8", errors="replace")
    return clean_text(decoded.replace("\r\n", "\n"))


def cut(value: str, limit: int) -> tuple[str, bool]:
    """``value`` within ``limit`` UTF-8 bytes (a character is never split)."""
    encoded = value.encode("utf-8")
    if len(encoded) <= limit:
        return value, False
    return encoded[:limit].decode("utf-8", errors="ignore"), True


async def _texts(connection: Connection, uid: int, parts: list[Leaf], limit: int) -> dict[str, Any]:
    """``plain`` / ``html`` (and ``hasMore``) of one message, each cut at ``limit`` bytes."""
    texts = [leaf for leaf in parts if leaf.is_body_text]
    if not texts:
        return {"hasMore": False}
    span = limit * ENCODED_GROWTH + 4
    request = " ".join(f"BODY.PEEK[{leaf.section}]<0.{span}>" for leaf in texts)
    lines = await connection.uid_fetch(str(uid), f"(UID {request})", span * len(texts))
    got: dict[str, Any] = {}
    for response in sexp.responses(lines):
        got.update(sexp.items(response))
    joined: dict[str, list[str]] = {}
    more = False
    for leaf in texts:
        data = got.get(f"BODY[{leaf.section}]<0>")
        if not isinstance(data, bytes):
            continue
        more = more or leaf.size > len(data)
        joined.setdefault(leaf.content_type.split("/")[1], []).append(decode_text(data, leaf))
    out: dict[str, Any] = {}
    for kind in ("plain", "html"):
        if kind in joined:
            out[kind], was_cut = cut("\n".join(joined[kind]), limit)
            more = more or was_cut
    out["hasMore"] = more
    return out


def items_for(capabilities: frozenset[str]) -> str:
    items = FETCH_DETAILS
    if "X-GM-EXT-1" in capabilities:
        items += GMAIL_ITEMS
    elif "OBJECTID" in capabilities:
        items += OBJECTID_ITEMS
    return items


def _single(value: Any) -> str | None:
    # RFC 8474 answers "EMAILID (M6d99ac3275bb4e)", Gmail a bare number.
    if isinstance(value, list):
        value = value[0] if value else None
    return clean_text(value, parse.MESSAGE_ID_MAX) if isinstance(value, str) and value else None


def identities(fetched: dict[str, Any]) -> dict[str, Any]:
    """``email_id`` / ``thread_id`` (and Gmail's ``labels``) from a FETCH's items."""
    out: dict[str, Any] = {}
    email_id = _single(fetched.get("X-GM-MSGID")) or _single(fetched.get("EMAILID"))
    thread_id = _single(fetched.get("X-GM-THRID")) or _single(fetched.get("THREADID"))
    if email_id:
        out["email_id"] = email_id
    if thread_id:
        out["thread_id"] = thread_id
    labels = fetched.get("X-GM-LABELS")
    if isinstance(labels, list):
        out["labels"] = [clean_text(label, parse.PATH_MAX) for label in labels if isinstance(label, str)]
    return out


async def fetch(connection: Connection, db: Database, path_message_id: dict[int, str]) -> dict[int, dict[str, Any]]:
    """uid -> MessageNew content fields for the announced messages (uid -> their opaque id).

    A message the server no longer has (expunged meanwhile) is simply left out:
    its event then carries what the index holds.
    """
    if not path_message_id:
        return {}
    notify = await notify_settings(db)
    lines = await connection.uid_fetch(parse.uid_set(list(path_message_id)), f"({items_for(connection.capabilities)})")
    found: dict[int, dict[str, Any]] = {}
    structures: dict[int, list[Leaf]] = {}
    for response in sexp.responses(lines):
        fetched = sexp.items(response)
        try:
            uid = int(fetched.get("UID", ""))
        except ValueError:
            continue
        message_id = path_message_id.get(uid)
        if message_id is None:
            continue
        parts = structures[uid] = leaves(fetched.get("BODYSTRUCTURE"))
        attachments, text = describe(message_id, parts)
        header = fetched.get("BODY[HEADER]")
        fields, headers = header_fields(header if isinstance(header, bytes) else None, notify.headers)
        found[uid] = {**fields, **identities(fetched), "attachments": attachments, "headers": headers, "text": text}
    if notify.text:
        limit = notify.text_size or TEXT_MAX
        for uid, fields in found.items():
            fields["text"].update(await _texts(connection, uid, structures[uid], limit))
    return found
