"""The structured submit body (EmailEngine's ``POST /v1/account/{account}/submit``).

Shared by everything that accepts mail, so REST and later doors validate the
same way.  Field names on the wire are EmailEngine's camelCase.  Like
EmailEngine's schema it is strict: a field it does not know is refused (400
naming it), never dropped.  EmailEngine fields mailgate cannot honour yet are
known here so they can be refused by name with "not supported" (see
:func:`unsupported`) instead of as unknown.

``mailMerge`` turns one submit into one message per entry (see the API's
``submit/merge.py``); ``trackOpens``, ``trackClicks``, ``trackingEnabled`` and
``baseUrl`` become outbox options the sender applies at send time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=998)]


class Address(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    name: str | None = None


class Attachment(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    content: str | None = None  # base64; required (mime refuses a part without it)
    filename: str | None = None
    content_type: str | None = None
    cid: str | None = None
    content_disposition: Literal["attachment", "inline"] | None = None
    # EmailEngine's only transfer encoding for ``content``.
    encoding: Literal["base64"] = "base64"
    reference: Any = None  # reuse a stored attachment: refused by unsupported()


class Reference(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    message: NonEmpty
    action: Literal["reply", "reply-all", "forward"] = "reply"
    # EmailEngine's defaults: only the new text, no quoted original, no attachments carried.
    inline: bool = False
    forward_attachments: bool = False
    ignore_missing: bool = False
    # Send only if the referenced message's Message-ID is this one.
    message_id: Annotated[str, msgspec.Meta(max_length=996)] | None = None
    thread_id: Any = None  # Gmail API only: refused by unsupported()
    document_store: Any = None  # EmailEngine's Elasticsearch store: refused by unsupported()


class EnvelopeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    from_: str | None = msgspec.field(name="from", default=None)
    to: list[str] | str | None = None


DsnNotify = Literal["never", "success", "failure", "delay"]


class Dsn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """RFC 3461 delivery status notification request: ENVID, RET, NOTIFY, ORCPT."""

    id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    return_: Literal["headers", "full"] = msgspec.field(name="return")
    notify: list[DsnNotify] | DsnNotify | None = None
    recipient: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | None = None


class RenderOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """EmailEngine's ``render``: Handlebars ``params`` for the message's (or template's) parts."""

    format: Literal["html", "markdown"] | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)


# One request, one transaction: big enough for a real list, small enough to build
# and commit within a client's timeout (10,000 take a few seconds).
MAX_MAIL_MERGE = 10_000


class MailMergeEntry(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """One recipient of a merge; ``messageId`` and ``sendAt`` override the message's."""

    to: Address
    message_id: Annotated[str, msgspec.Meta(max_length=996)] | None = None
    params: dict[str, Any] | None = None
    send_at: datetime | None = None


class SubmitRequest(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
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
    message_id: Annotated[str, msgspec.Meta(max_length=996)] | None = None
    reference: Reference | None = None
    send_at: datetime | None = None
    copy: bool | None = None
    sent_mail_path: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    delivery_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    gateway: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    dsn: Dsn | None = None
    envelope: EnvelopeIn | None = None
    raw: str | None = None  # a whole RFC 822 message, base64
    # Build the message and answer it (base64 ``preview``); store and send nothing.
    dry_run: bool = False
    # Suppressed recipients: false (default) refuses the submit naming them;
    # true drops just them from the envelope and sends to the rest (refused if none remain).
    skip_suppressed: bool = False
    # A stored template's id (/v1/templates): its parts replace subject, text, html and previewText.
    template: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    # Render the parts as Handlebars with these params; false sends them as they are.
    render: RenderOptions | bool | None = None
    # EmailEngine's hidden preheader, put at the top of the html body.
    preview_text: str | None = None
    # One message per entry, to that entry's recipient with its own params.
    mail_merge: Annotated[list[MailMergeEntry], msgspec.Meta(min_length=1, max_length=MAX_MAIL_MERGE)] | None = None
    # The merge's list (host name form): List-ID / List-Unsubscribe headers, its blocklist skipped.
    list_id: Annotated[str, msgspec.Meta(max_length=253)] | None = None
    # Per-message tracking; absent: the runtime settings decide at send time.
    # trackingEnabled is EmailEngine's older flag for both.
    tracking_enabled: bool | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    # Where this message's pixel, links and unsubscribe URL point ("" means not given, as in EmailEngine).
    base_url: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    # EmailEngine fields mailgate cannot honour yet; any meaningful value is refused.
    proxy: Any = None
    local_address: Any = None
    locale: Any = None
    tz: Any = None


# wire name -> why mailgate refuses it; values that ask for nothing (false, null, "") pass.
_UNSUPPORTED: dict[str, str] = {
    "proxy": "sending through a proxy is not supported",
    "localAddress": "a per-message local address is not supported (set MAILGATE_LOCAL_ADDRESSES)",
    "locale": "locale (for template date helpers) is not supported yet",
    "tz": "tz (for template date helpers) is not supported yet",
    "reference.threadId": "thread ids are only for Gmail API accounts, which mailgate does not have",
    "reference.documentStore": "the document store is not supported",
}


def _asks_for_something(value: Any) -> bool:
    return value is not None and value is not False and value != ""


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


# (wire name, parent attribute or None, attribute, why), worked out once: this runs on every submit.
_CHECKS = [
    (name, _snake(name.split(".")[0]) if "." in name else None, _snake(name.rsplit(".", 1)[-1]), why)
    for name, why in _UNSUPPORTED.items()
]


def unsupported(req: SubmitRequest) -> tuple[str, str] | None:
    """The first EmailEngine field set to something mailgate cannot do: (field, why)."""
    for name, parent, attr, why in _CHECKS:
        owner: Any = req if parent is None else getattr(req, parent)
        if owner is not None and _asks_for_something(getattr(owner, attr)):
            return name, why
    for index, attachment in enumerate(req.attachments):
        if _asks_for_something(attachment.reference):
            return (f"attachments[{index}].reference",
                    "reusing a stored attachment is not supported yet (send its content)")
    return None


def as_list(value: list[Address] | Address | None) -> list[Address]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def envelope_list(value: list[str] | str | None) -> list[str]:
    """``envelope.to`` as a list: EmailEngine takes a single address too."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value
