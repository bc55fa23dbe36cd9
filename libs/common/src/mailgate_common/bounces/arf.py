"""RFC 5965 abuse feedback reports (ARF): someone marked our message as spam."""

from __future__ import annotations

import re
from email.message import Message

from .dsn import address_in
from .mime import Parts, header_text, part_text
from .model import BouncedRecipient, BounceReport

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$", re.M)
# Feedback loops that predate ARF (Hotmail/AOL style) say so in the body instead.
_LEGACY_FBL = re.compile(
    r"(?i)this is an? (?:email )?(?:abuse|opt-out|fraud|virus|not-spam) report|"
    r"feedback[- ]type:\s*\w+|complaint about a message|spam complaint"
)


def _fields(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            (k.lower(), " ".join(str(v).split()))
            for block in payload
            if isinstance(block, Message)
            for k, v in block.items()
        ]
    return [(k.lower(), v.strip()) for k, v in _FIELD.findall(part_text(part))]


# Hotmail/Outlook.com's pre-ARF junk-mail reports mark the returned copy like this.
_HOTMAIL_RECIPIENT = "X-HmXmrOriginalRecipient"
# Mail clients' one-click unsubscribe messages (Apple Mail) are opt-out complaints.
_UNSUBSCRIBE = re.compile(r"(?i)sent this (?:e-?mail|message) to unsubscribe")


def is_feedback(msg: Message, parts: Parts) -> bool:
    if parts.feedback:
        return True
    if any(o.get(_HOTMAIL_RECIPIENT) for o in parts.originals):
        return True
    if _UNSUBSCRIBE.search(" ".join(parts.notice)[:1000]):
        return True
    ctype = msg.get_content_type()
    report_type = (msg.get_param("report-type") or "") if ctype == "multipart/report" else ""
    if str(report_type).lower() == "feedback-report":
        return True
    text = " ".join(parts.notice)[:3000]
    return bool(re.search(r"(?im)^feedback-type:\s*\S+", text)) or (
        bool(_LEGACY_FBL.search(text)) and bool(parts.originals)
    )


def parse(msg: Message, parts: Parts, message_id: str | None) -> BounceReport:
    pairs: list[tuple[str, str]] = []
    for part in parts.feedback:
        pairs.extend(_fields(part))
    if not pairs:
        # Non-MIME or mislabelled reports keep the ARF fields in the text itself.
        for text in parts.notice:
            pairs.extend((k.lower(), v.strip()) for k, v in _FIELD.findall(text))
    fields: dict[str, str] = {}
    for k, v in pairs:
        fields.setdefault(k, v)
    default_type = "opt-out" if _UNSUBSCRIBE.search(" ".join(parts.notice)[:1000]) else "abuse"
    feedback_type = (fields.get("feedback-type") or default_type).split()[0].lower()
    addresses: list[str] = []
    for name in ("original-rcpt-to", "removal-recipient"):
        addresses = [a for k, v in pairs if k == name and (a := address_in(v))]
        if addresses:
            break
    if not addresses:
        for original in parts.originals:
            found = address_in(header_text(original, _HOTMAIL_RECIPIENT)) or address_in(
                header_text(original, "To")
            )
            if found:
                addresses = [found]
                break
    if not addresses and default_type == "opt-out":
        addresses = [a for a in [address_in(header_text(msg, "From"))] if a]
    diagnostic = " ".join(" ".join(parts.notice).split())[:500] or None
    recipients = [
        BouncedRecipient(
            address=address,
            action="",
            reason="feedback",
            hard=False,
            diagnostic=diagnostic,
            mta=fields.get("reported-domain") or None,
            feedback_type=feedback_type,
        )
        for address in dict.fromkeys(addresses)
    ]
    return BounceReport(
        kind="complaint", message_id=message_id, recipients=recipients, feedback_type=feedback_type
    )
