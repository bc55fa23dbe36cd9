"""Auto-replies (vacation notices, RFC 3834) that must not be mistaken for bounces."""

from __future__ import annotations

import re
from email.message import Message

from .mime import header_text

_SUBJECT = re.compile(
    r"(?i)^(?:auto(?:matic)?[ _-]?(?:reply|response|antwort)|auto:|out of (?:the )?office|"
    r"away from|away until|on vacation|vacation|abwesenheit|absence|r[ée]ponse automatique|"
    r"respuesta autom[aá]tica|risposta automatica|i am away|i'm away|autoreply|"
    r"\u81ea\u52d5\u5fdc\u7b54|\u4e0d\u5728)"
)
_BODY = re.compile(
    r"(?i)i am (?:currently )?(?:away|out of (?:the )?office|on vacation|on leave)|"
    r"i'm (?:currently )?(?:away|out of (?:the )?office|on vacation)|"
    r"i will be (?:out of the office|away|traveling)|i will respond (?:to you )?(?:upon|when)|"
    r"limited access to (?:e-?mail|my email)|returning to the office|"
    r"this is an automat(?:ed|ic) (?:reply|response)|away on vacation"
)


def looks_like_autoreply(msg: Message, body: str) -> bool:
    """RFC 3834 headers, vendor auto-reply headers, or unmistakable vacation wording."""
    auto = header_text(msg, "Auto-Submitted").lower()
    subject = header_text(msg, "Subject")
    vendor = any(
        msg.get(h) is not None
        for h in (
            "X-Autoreply",
            "X-Autorespond",
            "X-Autoresponder",
            "X-Vacation",
            "X-Mail-Autoreply",
        )
    )
    precedence = header_text(msg, "Precedence").lower() == "auto_reply"
    if auto.startswith("auto-replied") or vendor or precedence:
        return True
    return bool(_SUBJECT.search(subject)) or bool(_BODY.search(body[:2000]))
