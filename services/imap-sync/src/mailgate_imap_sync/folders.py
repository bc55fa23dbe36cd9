"""Which folders besides INBOX an account watches, and whether one changed.

The account's ``path`` (EmailEngine's field) lists folder paths, special-use
references such as ``\\Sent`` and ``*`` for every folder.  INBOX is always
watched on IDLE by the watcher, so it is left out here; the folders returned
are polled with STATUS between IDLE rounds.
"""

from __future__ import annotations

import re
from typing import Any

from mailgate_common.db.models import Mailbox
from mailgate_imap_sync import parse

STATUS_ITEMS = "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
STATUS_ITEMS_PLAIN = "(MESSAGES UIDNEXT UIDVALIDITY)"
_STATUS_PAIR = re.compile(rb"(MESSAGES|UIDNEXT|UIDVALIDITY|HIGHESTMODSEQ) (\d+)", re.IGNORECASE)


def watch_spec(imap: dict[str, Any]) -> list[str]:
    raw = imap.get("path")
    if isinstance(raw, str):
        return [raw]
    return [p for p in raw or [] if isinstance(p, str)]


def _is_inbox(path: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 5.1); every other name is not.
    return path.upper() == "INBOX"


def watched(spec: list[str], folders: list[parse.Folder]) -> list[parse.Folder]:
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


def parse_status(lines: list[Any]) -> dict[str, int]:
    """MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ from a STATUS response."""
    info: dict[str, int] = {}
    for raw in lines:
        line = bytes(raw)
        # The items follow the (possibly odd) mailbox name: read only the last list.
        start = line.rfind(b"(")
        if start < 0:
            continue
        for key, value in _STATUS_PAIR.findall(line[start:]):
            info[key.decode().lower()] = int(value)
    return info


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
