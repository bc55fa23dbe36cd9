"""Mailto unsubscribes among new INBOX mail.

List mail carries ``List-Unsubscribe: <https://...>, <mailto:account@...?subject=unsubscribe <token>>``
(``tracking.tokens.unsubscribe_mailto``).  A mail app that prefers mailto sends
that mail to the account's own mailbox; when it shows up in INBOX, the watcher
calls ``check_new()`` and the signed token in its subject unsubscribes the
recipient from the list exactly like the one-click POST does (source "mailto").

The check costs nothing for ordinary mail: the subject is already among the
header fields the new-mail FETCH reads, and only a raw Subject line that
mentions "unsubscribe" (or is RFC 2047 encoded) is decoded at all.  The token
is the authority, not the From address (the recipient may write from an
alias); a token signed for another account does nothing here.  The message
itself is left alone.  Running it again on the same message (a resync, a crash
before the index commit) changes nothing: the blocklist keeps the first entry
and only the request that added it is announced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from email.header import decode_header, make_header
from functools import cache

from mailgate_common import unsubscribe
from mailgate_common.db import Database
from mailgate_common.event_relay import EventRelay
from mailgate_common.failures import is_transient
from mailgate_common.settings import load_settings
from mailgate_common.tracking.tokens import Signer, signer_for, unsubscribe_subject
from mailgate_imap_sync import parse

log = logging.getLogger(__name__)

_SUBJECT = re.compile(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HINTS = (b"unsubscribe", b"=?")
_SUBJECT_MAX = 8192  # a token is a few hundred characters; anything longer is not one


@cache
def _signer() -> Signer:
    # This process's own MAILGATE_SECRET(s), read once: the same keys the API signs and verifies with.
    return signer_for(load_settings())


def raw_subject(header: bytes | None) -> bytes | None:
    """The Subject field's raw value when it could hold a token, else None (no decoding yet)."""
    if not header or b"ubject" not in header:
        return None
    found = _SUBJECT.search(header)
    if found is None:
        return None
    value = found.group(1)
    lowered = value.lower()
    return value if len(value) <= _SUBJECT_MAX and any(h in lowered for h in _HINTS) else None


def decode_subject(raw: bytes) -> str | None:
    text = _FOLD.sub("", raw.decode("utf-8", errors="replace")).strip()
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # the email package raises on malformed encoded words
        return text


def request_in(signer: Signer, account: str, header: bytes | None) -> unsubscribe.Request | None:
    """The verified unsubscribe a new message's subject carries for this account, if any."""
    raw = raw_subject(header)
    if raw is None:
        return None
    subject = decode_subject(raw)
    token = unsubscribe_subject(subject) if subject else None
    if token is None:
        return None
    wanted = unsubscribe.read(signer, *token)
    if wanted is None or wanted.account != account:
        log.info("%s: unsubscribe mail with an invalid token, or one for another account: ignored", account)
        return None
    return wanted


async def check_new(db: Database, relay: EventRelay, account: str,
                    fetched: Sequence[parse.FetchedMessage]) -> None:
    """Apply the mailto unsubscribes among newly arrived INBOX messages (the watcher's hook)."""
    for message in fetched:
        wanted = request_in(_signer(), account, message.header)
        if wanted is None:
            continue
        try:
            added = await unsubscribe.apply(db, relay, wanted, unsubscribe.MAILTO)
        except Exception as exc:
            if is_transient(exc):
                raise  # the sync fails and runs again: the message is checked once more
            # One message that cannot be applied must not stall the folder's sync forever.
            log.exception("%s: mailto unsubscribe of uid %s failed", account, message.uid)
            continue
        log.info("%s: mailto unsubscribe of %s from %s: %s", account, wanted.recipient, wanted.list_id,
                 {True: "added", False: "already unsubscribed", None: "account gone"}[added])
