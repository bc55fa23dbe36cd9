"""The structured submit body (EmailEngine's ``POST /v1/account/{account}/submit``).

Shared by everything that accepts mail, so REST and later doors validate the
same way.  Field names on the wire are EmailEngine's camelCase.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=998)]


class Address(msgspec.Struct, kw_only=True):
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    name: str | None = None


class Attachment(msgspec.Struct, kw_only=True, rename="camel"):
    content: str  # base64
    filename: str | None = None
    content_type: str | None = None
    cid: str | None = None
    content_disposition: Literal["attachment", "inline"] | None = None


class Reference(msgspec.Struct, kw_only=True):
    message: NonEmpty
    action: Literal["reply", "reply-all", "forward"] = "reply"
    inline: bool = True


class EnvelopeIn(msgspec.Struct, kw_only=True):
    from_: str | None = msgspec.field(name="from", default=None)
    to: list[str] | None = None


class SubmitRequest(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=False):
    from_: Address | None = msgspec.field(name="from", default=None)
    to: list[Address] | Address | None = None
    cc: list[Address] | Address | None = None
    bcc: list[Address] | Address | None = None
    reply_to: list[Address] | Address | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    message_id: str | None = None
    reference: Reference | None = None
    send_at: datetime | None = None
    copy: bool | None = None
    delivery_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    envelope: EnvelopeIn | None = None
    raw: str | None = None  # a whole RFC 822 message, base64
    # Suppressed recipients: false (default) refuses the submit with 422 naming them;
    # true drops just them from the envelope and sends to the rest (422 if none remain).
    skip_suppressed: bool = False


def as_list(value: list[Address] | Address | None) -> list[Address]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
