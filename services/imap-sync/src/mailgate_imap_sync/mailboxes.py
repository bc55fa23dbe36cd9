"""Which folders appeared or disappeared between two listings (pure).

The previous listing is the account's ``mailboxes`` rows; the first listing of
an account (no rows yet) announces nothing, like existing mail is not "new".
INBOX never disappears: a listing that lacks it is the server's hiccup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailgate_imap_sync import parse


@dataclass
class Changes:
    appeared: list[parse.Folder] = field(default_factory=list)
    # path -> (special use, delimiter) as stored
    gone: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def changes(stored: dict[str, str | None], listed: list[parse.Folder]) -> Changes:
    """``stored``: path -> special use of the rows already there."""
    if not stored:
        return Changes()
    paths = {f.path for f in listed}
    delimiter = next((f.delimiter for f in listed if f.delimiter), None)
    return Changes(
        appeared=[f for f in listed if f.path not in stored],
        gone={path: (use, delimiter) for path, use in stored.items()
              if path not in paths and path.upper() != "INBOX"},
    )


def name_of(path: str, delimiter: str | None) -> str:
    """The folder's own name: the last part of its path."""
    return path.rsplit(delimiter, 1)[-1] if delimiter else path
