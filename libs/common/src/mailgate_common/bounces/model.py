"""Result types of the bounce parser (msgspec Structs, so they serialise cheaply)."""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["bounce", "complaint", "autoreply", "delivered", "none"]


class BouncedRecipient(msgspec.Struct, kw_only=True):
    """One recipient named in a bounce, complaint or delivery notice."""

    address: str
    action: str = "failed"
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str | None = None
    reason: str = "undefined"
    hard: bool = False
    mta: str | None = None
    # Only set for complaints (ARF Feedback-Type: abuse, opt-out, ...).
    feedback_type: str | None = None


class BounceReport(msgspec.Struct, kw_only=True):
    """What a parsed message tells us about the delivery of an earlier message."""

    kind: Kind
    message_id: str | None = None
    recipients: list[BouncedRecipient] = msgspec.field(default_factory=list)
    # For complaints: the ARF Feedback-Type of the report as a whole.
    feedback_type: str | None = None
