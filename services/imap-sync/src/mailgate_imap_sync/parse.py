"""Pure parsing of IMAP responses (as aioimaplib hands them over) and headers."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
FETCH_LINE = re.compile(rb"^\d+ FETCH \((?P<body>.*)$", re.S)
LITERAL_END = re.compile(rb"\{(\d+)\}$")
LIST_LINE = re.compile(rb'^(?:LIST )?\((?P<flags>[^)]*)\) (?P<delim>"[^"]*"|NIL) (?P<name>.+)$')
SPECIAL_USE = ("\\Sent", "\\Drafts", "\\Junk", "\\Trash", "\\Archive", "\\All", "\\Flagged")
# Folder names servers without SPECIAL-USE commonly use.
COMMON_NAMES = {
    "\\Sent": ("sent", "sent items", "sent messages", "sent mail", "[gmail]/sent mail"),
    "\\Drafts": ("drafts", "draft"),
    "\\Junk": ("junk", "spam", "junk e-mail", "[gmail]/spam"),
    "\\Trash": ("trash", "deleted items", "deleted messages", "bin", "[gmail]/trash"),
    "\\Archive": ("archive",),
}


@dataclass
class FetchedMessage:
    uid: int
    flags: list[str] = field(default_factory=list)
    size: int | None = None
    internal_date: datetime | None = None
    header: bytes | None = None


@dataclass(frozen=True)
class Folder:
    path: str
    delimiter: str | None
    special_use: str | None


def message_id(account: str, path: str, uidvalidity: int, uid: int) -> str:
    """Stable opaque id: the same message in the same folder always gets the same id."""
    digest = hashlib.sha256(f"{account}\0{path}\0{uidvalidity}\0{uid}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:15]).decode()


def _flags(body: bytes) -> list[str]:
    found = re.search(rb"FLAGS \(([^)]*)\)", body)
    return found.group(1).decode().split() if found else []


def parse_fetch(lines: list[Any]) -> list[FetchedMessage]:
    """FETCH responses: ``n FETCH (UID u FLAGS (...) ... BODY[...] {len}``, literal, ``)``."""
    out: list[FetchedMessage] = []
    i = 0
    while i < len(lines):
        line = bytes(lines[i])
        i += 1
        match = FETCH_LINE.match(line)
        if not match:
            continue
        body = match.group("body")
        uid = re.search(rb"UID (\d+)", body)
        if uid is None:
            continue
        item = FetchedMessage(uid=int(uid.group(1)), flags=_flags(body))
        size = re.search(rb"RFC822\.SIZE (\d+)", body)
        if size:
            item.size = int(size.group(1))
        date = re.search(rb'INTERNALDATE "([^"]+)"', body)
        if date:
            try:
                item.internal_date = datetime.strptime(date.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
            except ValueError:
                pass
        if LITERAL_END.search(body) and i < len(lines):
            item.header = bytes(lines[i])
            i += 1
            # Attributes after the literal (e.g. "UID 5)" on some servers).
            if i < len(lines) and not FETCH_LINE.match(bytes(lines[i])):
                tail = bytes(lines[i])
                if not item.flags:
                    item.flags = _flags(tail)
                i += 1
        out.append(item)
    return out


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_list(lines: list[Any]) -> list[Folder]:
    folders: list[Folder] = []
    for raw in lines:
        match = LIST_LINE.match(bytes(raw))
        if not match:
            continue
        flags = match.group("flags").decode().split()
        if any(f.lower() == "\\noselect" or f.lower() == "\\nonexistent" for f in flags):
            continue
        delim = match.group("delim").decode()
        special = next((f for f in flags if f in SPECIAL_USE), None)
        folders.append(Folder(_unquote(match.group("name").decode()),
                              None if delim == "NIL" else _unquote(delim), special))
    # Servers without SPECIAL-USE: guess from common names.
    taken = {f.special_use for f in folders if f.special_use}
    result: list[Folder] = []
    for folder in folders:
        if folder.special_use is None:
            for use, names in COMMON_NAMES.items():
                if use not in taken and folder.path.lower() in names:
                    folder = Folder(folder.path, folder.delimiter, use)
                    taken.add(use)
                    break
        result.append(folder)
    return result


def select_info(lines: list[Any]) -> dict[str, int]:
    """UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and EXISTS from a SELECT response."""
    info: dict[str, int] = {}
    for raw in lines:
        line = bytes(raw)
        for key in (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"):
            found = re.search(rb"\[" + key + rb" (\d+)\]", line)
            if found:
                info[key.decode().lower()] = int(found.group(1))
        exists = re.match(rb"^(\d+) EXISTS", line)
        if exists:
            info["exists"] = int(exists.group(1))
    return info


def _address(name: str, addr: str) -> dict[str, str]:
    result = {"address": addr}
    if name:
        result["name"] = name
    return result


def _addresses(value: str | None) -> list[dict[str, str]]:
    if not value:
        return []
    return [_address(n, a) for n, a in getaddresses([value]) if a]


def envelope(header: bytes | None) -> dict[str, Any]:
    """Decoded envelope fields from the raw header block."""
    if not header:
        return {}
    msg = BytesHeaderParser(policy=default_policy).parsebytes(header)

    def text(name: str) -> str | None:
        value = msg.get(name)
        return str(value).strip() if value is not None else None

    date = None
    raw_date = text("date")
    if raw_date:
        try:
            date = parsedate_to_datetime(raw_date)
            if date.tzinfo is None:
                date = None
        except (TypeError, ValueError):
            date = None
    senders = _addresses(text("from"))
    return {
        "message_id": text("message-id"),
        "subject": text("subject"),
        "from_addr": senders[0] if senders else None,
        "to_addr": _addresses(text("to")),
        "cc_addr": _addresses(text("cc")),
        "date": date,
        "in_reply_to": text("in-reply-to"),
        "references": text("references"),
    }


def uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in sorted(uids))


