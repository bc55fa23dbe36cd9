"""Refusals from mailing-list managers (fml): "you are not a member", loop alerts.

They are not DSNs and name the list, not a person, as the address that refused the
message. Phrases follow Sisimai's lhost/fml.go (go-sisimai, BSD 2-Clause License,
(C) azumakuniyuki and sisimai development team).
"""

from __future__ import annotations

import re
from email.message import Message

from .mime import header_text
from .model import BouncedRecipient, BounceReport
from .text import ADDR

_MANAGER = re.compile(r"(?i)\bfml\b")
_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rx, re.I))
    for name, rx in (
        (
            "rejected",
            r"are not member|not a member of this (?:mailing )?list|reject command|"
            r"reject spammers|you are not allowed to post",
        ),
        ("systemerror", r"duplicated message-id|loop alert|fml system error|are not allowed to use this"),
        ("securityerror", r"security alert"),
    )
)
_LIST_ADDRESS = re.compile(r"<(" + ADDR + r")>")


def parse(msg: Message, explanation: str, message_id: str | None) -> BounceReport | None:
    if not _MANAGER.search(header_text(msg, "X-MLServer")):
        return None
    subject = header_text(msg, "Subject")
    reason = next((name for name, rx in _REASONS if rx.search(subject) or rx.search(explanation)), "")
    if not reason:
        return None  # an ordinary list message or a command reply
    found = _LIST_ADDRESS.search(explanation)
    if found is None:
        return None
    first_paragraph = " ".join(explanation.strip().split("\n\n", 1)[0].split())
    recipient = BouncedRecipient(address=found.group(1), reason=reason, diagnostic=first_paragraph or None)
    return BounceReport(kind="bounce", message_id=message_id, recipients=[recipient])
