"""Pure parsing of IMAP responses (as aioimaplib hands them over) and headers.

Everything read here comes from a mail server or a stranger's message, so every
string leaves through ``clean_text`` (no NUL, no lone surrogate, a length cap)
and every number is bounded: PostgreSQL refuses NUL in text and jsonb, and one
message it refuses must not block a folder's sync.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.policy import default as default_policy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from mailgate_common.text import clean_text

log = logging.getLogger(__name__)

HEADER_FIELDS = "MESSAGE-ID SUBJECT FROM TO CC DATE IN-REPLY-TO REFERENCES"
FETCH_LINE = re.compile(rb"^\d+ FETCH \((?P<body>.*)$", re.S)
LITERAL_END = re.compile(rb"\{(\d+)\}$")

# Length caps of what is stored and announced (characters).
SUBJECT_MAX = 2000
MESSAGE_ID_MAX = 998  # RFC 5322's line length
REFERENCES_MAX = 8000
NAME_MAX = 256
ADDRESS_MAX = 320
ADDRESSES_MAX = 200  # per To/Cc
FLAG_MAX = 128
FLAGS_MAX = 64
PATH_MAX = 1000
FOLDERS_MAX = 2000  # folders listed (and polled) per account
# Header blocks are parsed up to this size (the few fields asked for fit many times).
HEADER_BLOCK_MAX = 64 * 1024
# UIDs, UIDVALIDITY and counts are 32-bit (RFC 3501), MODSEQ 63-bit (RFC 7162):
# longer digit strings are a broken or hostile server, not a number to store.
_INT32 = rb"\d{1,10}"
_INT63 = rb"\d{1,19}"
BIGINT_MAX = 2**63 - 1


class Change(enum.IntFlag):
    """Kinds of change a server reports unasked (IDLE pushes, NOOP answers)."""

    EXISTS = 1  # the message count (new mail)
    EXPUNGE = 2  # messages removed
    FLAGS = 4  # flags changed (FETCH)
    FOLDERS = 8  # another folder changed or one was created/renamed (NOTIFY's STATUS / LIST)


_CHANGE = re.compile(rb"^(?:\* )?(?:\d+ (EXISTS|RECENT|EXPUNGE|FETCH)|(VANISHED))", re.IGNORECASE)
_CHANGE_KIND = {b"EXISTS": Change.EXISTS, b"RECENT": Change.EXISTS, b"EXPUNGE": Change.EXPUNGE,
                b"FETCH": Change.FLAGS}


_FOLDER_CHANGE = re.compile(rb"^(?:\* )?(?:STATUS|LIST) ", re.IGNORECASE)


def change_of(line: bytes) -> int:
    """The kind of change an untagged line reports (0: none)."""
    if _FOLDER_CHANGE.match(line):
        return int(Change.FOLDERS)
    found = _CHANGE.match(line)
    if found is None:
        return 0
    if found.group(2):
        return int(Change.EXPUNGE)
    return int(_CHANGE_KIND[found.group(1).upper()])


def _bounded(value: bytes) -> int:
    return min(int(value), BIGINT_MAX)
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
    modseq: int | None = None
    internal_date: datetime | None = None
    header: bytes | None = None


# Slotted, and names interned (parse_list): a watcher keeps its account's listing
# for the connection's life, and most accounts have the same few folder names.
@dataclass(frozen=True, slots=True)
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
    if not found:
        return []
    return [flag for flag in clean_text(found.group(1)).split() if len(flag) <= FLAG_MAX][:FLAGS_MAX]


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
        uid = re.search(rb"UID (" + _INT32 + rb")\b", body)
        if uid is None:
            continue
        item = FetchedMessage(uid=int(uid.group(1)), flags=_flags(body))
        size = re.search(rb"RFC822\.SIZE (" + _INT63 + rb")\b", body)
        if size:
            item.size = _bounded(size.group(1))
        modseq = re.search(rb"MODSEQ \((" + _INT63 + rb")\)", body)
        if modseq:
            item.modseq = _bounded(modseq.group(1))
        date = re.search(rb'INTERNALDATE "([^"]{1,64})"', body)
        if date:
            try:
                item.internal_date = datetime.strptime(date.group(1).decode("ascii"), "%d-%b-%Y %H:%M:%S %z")
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
    for raw in lines[:FOLDERS_MAX]:
        match = LIST_LINE.match(bytes(raw))
        if not match:
            continue
        flags = clean_text(match.group("flags")).split()
        if any(f.lower() == "\\noselect" or f.lower() == "\\nonexistent" for f in flags):
            continue
        delim = clean_text(match.group("delim"), 8)
        # The constant, not the parsed copy: one string shared by every account.
        special = next((use for use in SPECIAL_USE if use in flags), None)
        name = _unquote(clean_text(match.group("name")))
        if len(name) > PATH_MAX:
            continue  # not a folder anyone could open
        folders.append(Folder(sys.intern(name), None if delim == "NIL" else sys.intern(_unquote(delim)), special))
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
        for key, digits in _SELECT_CODES:
            found = re.search(rb"\[" + key + rb" (" + digits + rb")\]", line)
            if found:
                info[key.decode().lower()] = _bounded(found.group(1))
        exists = re.match(rb"^(" + _INT32 + rb") EXISTS", line)
        if exists:
            info["exists"] = int(exists.group(1))
    return info


_SELECT_CODES = ((b"UIDVALIDITY", _INT32), (b"UIDNEXT", _INT32), (b"HIGHESTMODSEQ", _INT63))


def _address(name: str, addr: str) -> dict[str, str]:
    result = {"address": clean_text(addr, ADDRESS_MAX)}
    if name:
        result["name"] = clean_text(name, NAME_MAX)
    return result


def _addresses(value: str | None) -> list[dict[str, str]]:
    if not value:
        return []
    return [_address(n, a) for n, a in getaddresses([value]) if a][:ADDRESSES_MAX]


def addresses(value: str | None) -> list[dict[str, str]]:
    """The addresses of one header's value, clean and capped."""
    return _addresses(value)


def envelope(header: bytes | None) -> dict[str, Any]:
    """Decoded envelope fields from the raw header block, clean and capped."""
    if not header:
        return {}
    msg = BytesHeaderParser(policy=default_policy).parsebytes(header[:HEADER_BLOCK_MAX])

    def text(name: str, limit: int | None = None) -> str | None:
        try:
            value = msg.get(name)
            decoded = str(value) if value is not None else None
        except Exception:  # the email package's decoders raise on some malformed input
            log.debug("undecodable %s header", name, exc_info=True)
            raw = BytesHeaderParser(policy=compat32).parsebytes(header[:HEADER_BLOCK_MAX]).get(name)
            decoded = str(raw) if raw is not None else None
        return clean_text(decoded.strip(), limit) if decoded is not None else None

    date = None
    raw_date = text("date")
    if raw_date:
        try:
            date = parsedate_to_datetime(raw_date)
            if date.tzinfo is None:
                date = None
        except (TypeError, ValueError, OverflowError, IndexError):
            date = None
    senders = _addresses(text("from"))
    return {
        "message_id": text("message-id", MESSAGE_ID_MAX),
        "subject": text("subject", SUBJECT_MAX),
        "from_addr": senders[0] if senders else None,
        "to_addr": _addresses(text("to")),
        "cc_addr": _addresses(text("cc")),
        "date": date,
        "in_reply_to": text("in-reply-to", MESSAGE_ID_MAX),
        "references": text("references", REFERENCES_MAX),
    }


def search_result(lines: list[Any]) -> list[int]:
    """The numbers of SEARCH responses ("1 2 3", "4 5 (MODSEQ 917)")."""
    found: list[int] = []
    for line in lines:
        numbers = bytes(line).split(b"(", 1)[0]
        found += [int(n) for n in numbers.split() if n.isdigit() and len(n) <= 10]
    return found


def uid_set(uids: list[int]) -> str:
    """A compact UID set: "1:3,7,9:10"."""
    runs: list[str] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(runs)


