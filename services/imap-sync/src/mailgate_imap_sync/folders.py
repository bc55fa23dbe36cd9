"""Which folders besides INBOX an account watches, and whether one changed.

The account's ``path`` (EmailEngine's field) lists folder paths, special-use
references such as ``\\Sent`` and ``*`` for every folder; unset, every folder
is watched, as EmailEngine does (``\\Junk`` and ``\\Trash`` included;
folders that cannot be selected are never listed, see ``parse.parse_list``).
On Gmail (``X-GM-EXT-1``) "every folder" means INBOX, ``\\Junk`` and
``\\Trash``: the other folders are labels of the same messages, and
``\\All`` holds INBOX's too, so watching them would index - and announce -
each message twice.  INBOX is always watched on IDLE by the watcher, so it is
left out here; the folders returned are polled with STATUS between IDLE rounds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailgate_common.db.models import Mailbox
from mailgate_imap_sync import parse

STATUS_ITEMS = "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
STATUS_ITEMS_PLAIN = "(MESSAGES UIDNEXT UIDVALIDITY)"
_STATUS_PAIR = re.compile(rb"(MESSAGES|UIDNEXT|UIDVALIDITY|HIGHESTMODSEQ) (\d+)", re.IGNORECASE)


# Unset ``path``: every folder (EmailEngine's default).
DEFAULT_SPEC = ("*",)
GMAIL_EVERY = ("\\Junk", "\\Trash")


def watch_spec(imap: dict[str, Any]) -> list[str]:
    raw = imap.get("path")
    if isinstance(raw, str):
        return [raw]
    if raw is None:
        return list(DEFAULT_SPEC)
    return [p for p in raw if isinstance(p, str)]


def for_server(spec: list[str], capabilities: frozenset[str]) -> list[str]:
    """``spec`` as it applies to this server: on Gmail ``*`` means ``\\Junk`` and ``\\Trash``."""
    if "*" in spec and "X-GM-EXT-1" in capabilities:
        return [p for p in spec if p != "*"] + [p for p in GMAIL_EVERY if p not in spec]
    return spec


def _is_inbox(path: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 5.1); every other name is not.
    return path.upper() == "INBOX"


# Accounts on one server mostly list the same folders: one shared tuple per distinct
# listing instead of one list per watcher (memory per watched account is what counts).
_LISTINGS_MAX = 10_000
_listings: dict[tuple[parse.Folder, ...], tuple[parse.Folder, ...]] = {}


def shared(listed: Sequence[parse.Folder]) -> tuple[parse.Folder, ...]:
    key = tuple(listed)
    if len(_listings) >= _LISTINGS_MAX:
        _listings.clear()
    return _listings.setdefault(key, key)


def watched(spec: list[str], folders: Sequence[parse.Folder]) -> list[parse.Folder]:
    """The listed folders other than INBOX, in server order, each once.

    A path the server does not list (yet) is skipped: the next poll lists
    again, so a folder created later is picked up then.
    """
    chosen: set[str] = set()
    for item in spec:
        if item == "*":
            chosen.update(f.path for f in folders)
        elif item.startswith("\\"):
            chosen.update(f.path for f in folders
                          if f.special_use and f.special_use.lower() == item.lower())
        else:
            chosen.update(f.path for f in folders if f.path == item)
    return [f for f in folders if f.path in chosen and not _is_inbox(f.path)]


def parse_status(lines: list[Any], path: str | None = None) -> dict[str, int]:
    """MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ from a STATUS response.

    ``path``: only the lines about that folder - with NOTIFY the server may slip
    another folder's STATUS into the answer (a name written in a way not
    recognised here, e.g. as a literal, falls back to every line).
    """
    found = [bytes(raw) for raw in lines]
    if path is not None:
        found = [line for line in found if _names(line[:max(0, line.rfind(b"("))], path)] or found
    info: dict[str, int] = {}
    for line in found:
        # The items follow the (possibly odd) mailbox name: read only the last list.
        start = line.rfind(b"(")
        if start < 0:
            continue
        for key, value in _STATUS_PAIR.findall(line[start:]):
            info[key.decode().lower()] = int(value)
    return info


def _names(head: bytes, path: str) -> bool:
    """Whether the mailbox name before a STATUS item list is ``path``."""
    name = head.strip()
    if name[:7].upper() == b"STATUS ":
        name = name[7:].strip()
    text = name.decode("utf-8", errors="replace")
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text == path or (text.upper() == "INBOX" and path.upper() == "INBOX")


def unchanged(stored: Mailbox | None, status: dict[str, int]) -> bool:
    """True only when STATUS proves the index still matches the folder.

    Without HIGHESTMODSEQ a flag change is invisible to STATUS, so such a
    folder always gets a full comparison.
    """
    if stored is None or stored.synced_at is None or "highestmodseq" not in status:
        return False
    return (stored.uidvalidity == status.get("uidvalidity")
            and stored.uidnext == status.get("uidnext")
            and stored.messages == status.get("messages")
            and stored.highestmodseq == status["highestmodseq"])
