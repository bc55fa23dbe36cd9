"""EmailEngine's ``search`` object compiled to IMAP ``UID SEARCH`` criteria (a pure function).

Strings go as quoted strings, UTF-8 inside when they are not ASCII (with
``CHARSET UTF-8``), which Dovecot, Gmail and the other common servers
accept: aioimaplib refuses CR and LF in command arguments, so a literal
(``{n}`` CRLF bytes) cannot be sent through it.
Keys that need a server extension (emailId, threadId, modseq, Gmail's
labels and raw search) are refused naming the key when the server lacks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# An IMAP sequence set: numbers, ranges and "*" separated by commas.
_SEQUENCE_SET = re.compile(r"^(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_ATOM = re.compile(r"^[!#-'*+\-.0-9A-Z^-z|~]+$")

_FLAGS = {  # key: (criterion when true, criterion when false)
    "answered": ("ANSWERED", "UNANSWERED"),
    "deleted": ("DELETED", "UNDELETED"),
    "draft": ("DRAFT", "UNDRAFT"),
    "flagged": ("FLAGGED", "UNFLAGGED"),
    "seen": ("SEEN", "UNSEEN"),
    "unseen": ("UNSEEN", "SEEN"),
}
_STRINGS = {"from": "FROM", "to": "TO", "cc": "CC", "bcc": "BCC", "subject": "SUBJECT", "body": "BODY"}
_NUMBERS = {"larger": "LARGER", "smaller": "SMALLER"}
_DATES = {"since": "SINCE", "before": "BEFORE", "sentSince": "SENTSINCE", "sentBefore": "SENTBEFORE"}
_SETS = {"uid": "UID", "seq": ""}
GMAIL = "X-GM-EXT-1"
OBJECTID = "OBJECTID"


class SearchError(ValueError):
    """A search the server cannot run; ``field`` names the key (``search.<key>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Compiled:
    criteria: list[str]
    charset: str | None  # "UTF-8" when a string is not ASCII


class _Strings:
    def __init__(self) -> None:
        self.utf8 = False

    def __call__(self, field: str, value: Any) -> str:
        if not isinstance(value, str):
            raise SearchError(field, "must be a string")
        if "\r" in value or "\n" in value or "\0" in value:
            raise SearchError(field, "must not contain line breaks")
        if not value.isascii():
            self.utf8 = True
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_date(field: str, value: Any) -> str:
    """``2024-08-09`` or an ISO timestamp as IMAP's ``9-Aug-2024`` (the date part only)."""
    if not isinstance(value, str):
        raise SearchError(field, "must be a date (YYYY-MM-DD or ISO 8601)")
    try:
        day: date = datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        raise SearchError(field, "must be a date (YYYY-MM-DD or ISO 8601)") from None
    return f"{day.day}-{MONTHS[day.month - 1]}-{day.year}"


def _number(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SearchError(field, "must be a non-negative integer")
    return str(value)


def _or_all(criteria: list[list[str]]) -> list[str]:
    """Any of several criteria: IMAP's OR takes two, so nest it."""
    if len(criteria) == 1:
        return criteria[0]
    return ["OR", "(", *criteria[0], ")", "(", *_or_all(criteria[1:]), ")"]


def compile_search(search: dict[str, Any], capabilities: frozenset[str]) -> Compiled:
    """The UID SEARCH criteria for ``search``; SearchError naming the key it cannot use."""
    string = _Strings()
    gmail = GMAIL in capabilities
    objectid = OBJECTID in capabilities
    out: list[str] = []

    def need(field: str, ok: bool, what: str) -> None:
        if not ok:
            raise SearchError(field, f"the mail server does not support {what}")

    for key, value in search.items():
        field = f"search.{key}"
        if value is None:
            continue
        if key in _FLAGS:
            if not isinstance(value, bool):
                raise SearchError(field, "must be true or false")
            out.append(_FLAGS[key][0 if value else 1])
        elif key in _STRINGS:
            out += [_STRINGS[key], string(field, value)]
        elif key in _NUMBERS:
            out += [_NUMBERS[key], _number(field, value)]
        elif key in _DATES:
            out += [_DATES[key], imap_date(field, value)]
        elif key in _SETS:
            if not isinstance(value, str) or not _SEQUENCE_SET.match(value):
                raise SearchError(field, 'must be a sequence set such as "1:10" or "1,3,5"')
            out += [_SETS[key], value] if _SETS[key] else [value]
        elif key == "modseq":
            need(field, "CONDSTORE" in capabilities, "CONDSTORE")
            out += ["MODSEQ", _number(field, value)]
        elif key == "header":
            if not isinstance(value, dict):
                raise SearchError(field, "must be an object of header names and values")
            for name, text in value.items():
                if not isinstance(name, str) or not _ATOM.match(name):
                    raise SearchError(f"{field}.{name}", "is not a header name")
                # true: the header is present at all (any value contains "").
                out += ["HEADER", name, string(f"{field}.{name}", "" if text is True else text)]
        elif key in ("emailId", "threadId"):
            need(field, gmail or objectid, "email and thread ids (OBJECTID or X-GM-EXT-1)")
            token = _id_token(key, gmail)
            out += [token, _object_id(field, value, gmail)]
        elif key == "emailIds":
            need(field, gmail or objectid, "email ids (OBJECTID or X-GM-EXT-1)")
            ids = value if isinstance(value, list) else [value]
            if not ids:
                raise SearchError(field, "must list at least one id")
            token = _id_token("emailId", gmail)
            out += _or_all([[token, _object_id(field, v, gmail)] for v in ids])
        elif key == "gmailRaw":
            need(field, gmail, "Gmail search (X-GM-EXT-1)")
            out += ["X-GM-RAW", string(field, value)]
        elif key == "labels":
            need(field, gmail, "labels (X-GM-EXT-1)")
            if not isinstance(value, dict) or set(value) - {"has", "not"}:
                raise SearchError(field, 'must be an object with "has" and/or "not"')
            for kind, labels in value.items():
                for label in labels if isinstance(labels, list) else [labels]:
                    criterion = ["X-GM-LABELS", string(f"{field}.{kind}", label)]
                    out += criterion if kind == "has" else ["NOT", *criterion]
        else:
            raise SearchError(field, "is not a search key")
    return Compiled(out or ["ALL"], "UTF-8" if string.utf8 else None)


def _id_token(key: str, gmail: bool) -> str:
    if gmail:
        return "X-GM-MSGID" if key == "emailId" else "X-GM-THRID"
    return "EMAILID" if key == "emailId" else "THREADID"


def _object_id(field: str, value: Any, gmail: bool) -> str:
    """Gmail's ids are decimal numbers; RFC 8474's are atoms of letters, digits, - and _."""
    text = str(value)
    if not (text.isdigit() if gmail else _OBJECT_ID.match(text)):
        raise SearchError(field, "must be a Gmail id (digits)" if gmail else "is not an email or thread id")
    return text
