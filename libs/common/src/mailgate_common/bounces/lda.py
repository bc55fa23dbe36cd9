"""Reasons from local delivery agents (dovecot, mail.local, procmail, maildrop, ...).

When the final hop hands the message to a delivery program, that program's own
error text is the real cause ("procmail: Quota exceeded while writing"), whatever
status code the MTA wrapped around it. Port of Sisimai's lda (rb-sisimai lib/sisimai/
lda.rb, BSD 2-Clause License, Copyright (C) 2014-2025 azumakuniyuki and sisimai
development team).
"""

from __future__ import annotations

import re

# Agent -> fragments that show the agent wrote the error.
_AGENTS: dict[str, tuple[str, ...]] = {
    "dovecot": ("your message to <", "> was automatically rejected:"),
    "mail.local": ("mail.local: ",),
    "procmail": ("procmail: ", "/procmail "),
    "maildrop": ("maildrop: ",),
    "vpopmail": ("vdelivermail: ",),
    "vmailmgr": ("vdeliver: ",),
}
_MESSAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "dovecot": {
        "mailboxfull": (
            "not enough disk space",
            "quota exceeded",
            "quota exceeded (mailbox for user is full)",
        ),
        "userunknown": ("mailbox doesn't exist: ",),
    },
    "mail.local": {
        "mailboxfull": ("disc quota exceeded", "mailbox full or quota exceeded"),
        "systemerror": ("temporary file write error",),
        "userunknown": (
            ": invalid mailbox path",
            ": unknown user:",
            ": user missing home directory",
            ": user unknown",
        ),
    },
    "procmail": {
        "mailboxfull": ("quota exceeded while writing", "user over quota"),
        "systemerror": ("service unavailable",),
        "systemfull": ("no space left to finish writing",),
    },
    "maildrop": {
        "userunknown": ("cannot find system user", "invalid user specified."),
        "mailboxfull": ("maildir over quota.",),
    },
    "vpopmail": {
        "filtered": ("user does not exist, but will deliver to ",),
        "mailboxfull": ("domain is over quota", "user is over quota"),
        "suspend": ("account is locked email bounced",),
        "userunknown": ("sorry, no mailbox here by that name.",),
    },
    "vmailmgr": {
        "mailboxfull": ("delivery failed due to system quota violation",),
        "userunknown": (
            "invalid or unknown base user or domain",
            "invalid or unknown virtual user",
            "user name does not refer to a virtual user",
        ),
    },
}


# Dovecot's LDA writes the whole rejection notice itself: its text is the diagnosis
# even when the MTA also filled in a Diagnostic-Code of its own.
_DOVECOT_NOTICE = re.compile(r"(?i)your message to <[^>\n]*> was automatically rejected:")


def find(diagnostic: str, notice: str, command: str) -> str:
    """The delivery agent's reason, 'mailererror' if it failed for an unlisted cause.

    Only for failures at or after DATA: a refusal of an earlier command happened
    before any local delivery program could run. The notice is read only when the
    recipient has no diagnostic of its own (a transcript quotes earlier, unrelated
    agent errors) or when the agent wrote the notice itself.
    """
    if command not in ("", "DATA"):
        return ""
    reason = _find(diagnostic)
    if not reason and notice and (not diagnostic.strip() or _DOVECOT_NOTICE.search(notice)):
        reason = _find(notice)
    return reason


def _find(text: str) -> str:
    low = text.lower()
    agent = next((a for a, marks in _AGENTS.items() if any(m in low for m in marks)), "")
    if not agent:
        return ""
    for reason, phrases in _MESSAGES[agent].items():
        if any(p in low for p in phrases):
            return reason
    return "mailererror"
