"""Every event that crosses a service boundary, in one place.

An event is a msgspec Struct whose tag is its RabbitMQ routing key, so the
wire name, the routing and the type can never disagree.  Events carry ids and
small facts; raw MIME stays in PostgreSQL and travels by queue id.

Adding a field with a default is backwards compatible.  Anything else bumps
``SCHEMA_VERSION`` and consumers must accept both versions during a rollout.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import msgspec

from mailgate_common.telemetry import current_traceparent

SCHEMA_VERSION = 1


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision, as EmailEngine prints dates."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Envelope(msgspec.Struct, frozen=True):
    from_: str = msgspec.field(name="from", default="")
    to: list[str] = msgspec.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.from_, "to": list(self.to)}


class Event(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    v: int = SCHEMA_VERSION
    id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    account: str | None = None
    # W3C trace context of the operation that caused the event, so one trace
    # follows a message from submit to SMTP to webhook.
    traceparent: str | None = msgspec.field(default_factory=current_traceparent)

    # EmailEngine webhook event name, or None when subscribers never see it.
    webhook_event: ClassVar[str | None] = None

    @property
    def routing_key(self) -> str:
        tag = type(self).__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def webhook_name(self) -> str | None:
        return self.webhook_event

    def webhook_data(self) -> dict[str, Any]:
        return {}


# --- submissions and accounts (api, smtp-ingress) ---------------------------


class SubmissionQueued(Event, kw_only=True, frozen=True, tag="submission.queued"):
    """The sender's wake-up call: a message is due now.  Under load one event
    stands for many: ``also`` holds the queue ids of the messages queued while
    the previous wake-up was on its way, with their trace context ("" if none)."""

    queue_id: str
    message_id: str
    send_at: datetime
    also: dict[str, str] = msgspec.field(default_factory=dict)

    def traces(self) -> dict[str, str]:
        """Queue id -> trace context of every message this wake-up stands for."""
        own = {self.queue_id: self.traceparent} if self.traceparent else {}
        return own | {queue_id: tp for queue_id, tp in self.also.items() if tp}


class AccountChanged(Event, kw_only=True, frozen=True, tag="account.changed"):
    change: Literal["added", "updated", "deleted"]

    def webhook_name(self) -> str | None:
        return {"added": "accountAdded", "deleted": "accountDeleted"}.get(self.change)

    def webhook_data(self) -> dict[str, Any]:
        return {"account": self.account}


# --- delivery outcomes (sender) ---------------------------------------------


class MessageSent(Event, kw_only=True, frozen=True, tag="message.sent"):
    webhook_event: ClassVar[str | None] = "messageSent"
    queue_id: str
    message_id: str
    response: str
    envelope: Envelope

    def webhook_data(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "response": self.response,
            "queueId": self.queue_id,
            "envelope": self.envelope.as_dict(),
        }


class MessageDeliveryError(Event, kw_only=True, frozen=True, tag="message.delivery_error"):
    webhook_event: ClassVar[str | None] = "messageDeliveryError"
    queue_id: str
    message_id: str
    envelope: Envelope
    error: str
    error_code: str | None = None
    smtp_response: str | None = None
    smtp_response_code: int | None = None
    smtp_command: str | None = None
    attempts_made: int
    attempts: int
    # None once no further attempt will be made.
    next_attempt: datetime | None = None
    # The connection failed after the whole message was written: the server may
    # have delivered it (see lifecycle.UNKNOWN).
    outcome_unknown: bool = False

    def webhook_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queueId": self.queue_id,
            "messageId": self.message_id,
            "envelope": self.envelope.as_dict(),
            "error": self.error,
            "job": {
                "attemptsMade": self.attempts_made,
                "attempts": self.attempts,
                "nextAttempt": iso(self.next_attempt) if self.next_attempt else False,
            },
        }
        if self.outcome_unknown:
            data["outcomeUnknown"] = True
        for key, value in (
            ("errorCode", self.error_code),
            ("smtpResponse", self.smtp_response),
            ("smtpResponseCode", self.smtp_response_code),
            ("smtpCommand", self.smtp_command),
        ):
            if value is not None:
                data[key] = value
        return data


class MessageFailed(Event, kw_only=True, frozen=True, tag="message.failed"):
    webhook_event: ClassVar[str | None] = "messageFailed"
    queue_id: str
    message_id: str
    error: str
    envelope: Envelope | None = None
    outcome_unknown: bool = False  # it may have been delivered all the same

    def webhook_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"messageId": self.message_id, "queueId": self.queue_id, "error": self.error}
        if self.outcome_unknown:
            data["outcomeUnknown"] = True
        return data


# --- mailbox commands (sender -> imap-sync) ---------------------------------


class ImapAppendSent(Event, kw_only=True, frozen=True, tag="imap.append_sent"):
    """Copy a sent message (by queue id) into the account's Sent folder."""

    queue_id: str


class ImapSetFlags(Event, kw_only=True, frozen=True, tag="imap.set_flags"):
    """Flag the message a reply or forward referenced."""

    message: str
    add: list[str] = msgspec.field(default_factory=list)
    remove: list[str] = msgspec.field(default_factory=list)


class ImapFetch(Event, kw_only=True, frozen=True, tag="rpc.imap.fetch"):
    """Request (RPC, api -> imap-sync): the whole RFC 822 source of an indexed message.

    The reply body is the raw message; a reply with ``x-mailgate-status: 404``
    means the message is no longer on the server.
    """

    message: str


class ImapCommand(Event, kw_only=True, frozen=True, tag="rpc.imap.command"):
    """Request (RPC, api -> imap-sync): one mailbox operation on the account's kept connection.

    ``op`` names the operation (the handlers are registered in imap-sync's
    ``operations`` table, e.g. "message.update", "mailbox.create", "verify");
    ``args`` are its EmailEngine-shaped arguments; ``raw`` carries an uploaded
    message.  The reply body is JSON: EmailEngine's response body on success,
    or ``{"error", "code"}`` with the HTTP status in ``x-mailgate-status``.
    """

    op: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    raw: bytes | None = None


class AccountCommand(Event, kw_only=True, frozen=True, tag="imap.account_command"):
    """reconnect / sync / flush an account's IMAP watcher (api -> imap-sync)."""

    command: Literal["reconnect", "sync", "flush"]


# --- mailbox changes and account state (imap-sync) --------------------------

INBOX_SPECIAL_USE = "\\Inbox"


def folder_special_use(path: str, special_use: str | None) -> str | None:
    """The special use EmailEngine reports for a folder: INBOX is ``\\Inbox``."""
    return INBOX_SPECIAL_USE if path.upper() == "INBOX" else special_use


def webhook_context(event: Event) -> dict[str, Any]:
    """Top-level webhook fields of a folder's event: EmailEngine puts the folder's
    ``path`` and ``specialUse`` next to ``account`` and ``event``, not in ``data``."""
    path = getattr(event, "path", None)
    if not isinstance(path, str):
        return {}
    context: dict[str, Any] = {"path": path}
    special_use = folder_special_use(path, getattr(event, "special_use", None))
    if special_use:
        context["specialUse"] = special_use
    return context


# messageNew fields EmailEngine leaves out when the message has no such header.
_OPTIONAL_NEW = frozenset({"sender", "replyTo", "cc", "bcc", "inReplyTo", "messageSpecialUse"})


class _MailboxMessage(Event, kw_only=True, frozen=True, tag="message._mailbox"):
    """Facts of one indexed message, rendered as EmailEngine's webhook ``data``."""

    path: str
    message: str  # the stable opaque message id
    uid: int
    message_id: str | None = None
    subject: str | None = None
    from_: dict[str, str] | None = msgspec.field(name="from", default=None)
    to: list[dict[str, str]] = msgspec.field(default_factory=list)
    cc: list[dict[str, str]] = msgspec.field(default_factory=list)
    date: datetime | None = None
    flags: list[str] = msgspec.field(default_factory=list)
    size: int | None = None
    in_reply_to: str | None = None
    special_use: str | None = None


class MessageNew(_MailboxMessage, kw_only=True, frozen=True, tag="message.new"):
    """A message arrived in a watched folder.

    The content fields come from the BODYSTRUCTURE and header block fetched
    for announced mail only (``None``: not fetched, e.g. an event staged by an
    older replica); ``text`` holds EmailEngine's text object, with ``plain`` /
    ``html`` only when the ``notifyText`` setting asks for them.
    """

    webhook_event: ClassVar[str | None] = "messageNew"
    sender: dict[str, str] | None = None
    reply_to: list[dict[str, str]] = msgspec.field(default_factory=list)
    bcc: list[dict[str, str]] = msgspec.field(default_factory=list)
    attachments: list[dict[str, Any]] | None = None
    headers: dict[str, list[str]] | None = None
    text: dict[str, Any] | None = None
    email_id: str | None = None
    thread_id: str | None = None
    labels: list[str] | None = None

    def webhook_data(self) -> dict[str, Any]:
        flags = list(self.flags)
        data: dict[str, Any] = {"id": self.message, "uid": self.uid, "path": self.path}
        if self.email_id:
            data["emailId"] = self.email_id
        if self.thread_id:
            data["threadId"] = self.thread_id
        data.update({
            "date": iso(self.date),
            "flags": flags,
        })
        if self.labels is not None:
            data["labels"] = list(self.labels)
        data.update({
            "unseen": "\\Seen" not in flags,
            "flagged": "\\Flagged" in flags,
            "answered": "\\Answered" in flags,
            "draft": "\\Draft" in flags,
            "size": self.size,
            "subject": self.subject,
            "from": self.from_,
            "sender": self.sender,
            "replyTo": list(self.reply_to),
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc),
            "attachments": list(self.attachments or []),
            "messageId": self.message_id,
            "inReplyTo": self.in_reply_to,
        })
        if self.headers is not None:
            data["headers"] = self.headers
        if self.text is not None:
            data["text"] = self.text
        # EmailEngine's test: mail nobody has read or deleted yet.
        data["seemsLikeNew"] = "\\Seen" not in flags and "\\Deleted" not in flags
        data["messageSpecialUse"] = folder_special_use(self.path, self.special_use)
        # As EmailEngine: an address field the message does not have is left out.
        return {k: v for k, v in data.items() if not (k in _OPTIONAL_NEW and v in (None, []))}


class MessageUpdated(_MailboxMessage, kw_only=True, frozen=True, tag="message.updated"):
    webhook_event: ClassVar[str | None] = "messageUpdated"
    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)

    def webhook_data(self) -> dict[str, Any]:
        # EmailEngine's shape: what was added, what was deleted, and the flags now.
        flags: dict[str, Any] = {}
        if self.added:
            flags["added"] = list(self.added)
        if self.removed:
            flags["deleted"] = list(self.removed)
        flags["value"] = list(self.flags)
        return {"id": self.message, "uid": self.uid, "changes": {"flags": flags}}


class MessageDeleted(Event, kw_only=True, frozen=True, tag="message.deleted"):
    webhook_event: ClassVar[str | None] = "messageDeleted"
    path: str
    message: str
    uid: int
    message_id: str | None = None
    special_use: str | None = None

    def webhook_data(self) -> dict[str, Any]:
        return {"id": self.message, "uid": self.uid}


class MailboxNew(Event, kw_only=True, frozen=True, tag="account.mailbox_new"):
    """A folder appeared on the server (it is indexed from now on if watched)."""

    webhook_event: ClassVar[str | None] = "mailboxNew"
    path: str
    name: str
    special_use: str | None = None
    uid_validity: int | None = None

    def webhook_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "name": self.name, "specialUse": self.special_use or False}
        if self.uid_validity is not None:
            data["uidValidity"] = str(self.uid_validity)
        return data


class MailboxDeleted(Event, kw_only=True, frozen=True, tag="account.mailbox_deleted"):
    """A folder is gone from the server; its index was dropped."""

    webhook_event: ClassVar[str | None] = "mailboxDeleted"
    path: str
    name: str
    special_use: str | None = None

    def webhook_data(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "specialUse": self.special_use or False}


class AccountState(Event, kw_only=True, frozen=True, tag="account.state"):
    """The IMAP connection state of an account changed (sent once per change)."""

    state: Literal["connecting", "connected", "authenticationError", "connectError", "disconnected"]
    error: str | None = None
    response: str | None = None

    def webhook_name(self) -> str | None:
        if self.state in ("authenticationError", "connectError"):
            return self.state
        return None

    def webhook_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"state": self.state}
        if self.error:
            data["error"] = self.error
        if self.response:
            data["response"] = self.response
        return data


# --- bounces and complaints (imap-sync) -------------------------------------


class MessageBounce(Event, kw_only=True, frozen=True, tag="message.bounce"):
    """A bounce for one recipient found in INBOX, linked to the sent message when known."""

    webhook_event: ClassVar[str | None] = "messageBounce"
    bounce_message: str  # index id of the DSN in INBOX
    recipient: str
    action: str | None = None
    status: str | None = None
    response_source: str | None = None  # Diagnostic-Code type, e.g. "smtp"
    response_message: str | None = None
    reply_code: int | None = None
    mta: str | None = None
    message_id: str | None = None  # Message-ID of the original message
    queue_id: str | None = None
    reason: str = "undefined"
    hard: bool = False
    # Linked to a message this account sent to this recipient.  Anyone can mail
    # a DSN to a watched mailbox: an unverified one never suppresses anything.
    verified: bool = True

    def webhook_data(self) -> dict[str, Any]:
        response = {k: v for k, v in (("source", self.response_source), ("message", self.response_message),
                                      ("status", self.status)) if v is not None}
        data: dict[str, Any] = {
            "bounceMessage": self.bounce_message,
            "recipient": self.recipient,
            "action": self.action,
            "response": response,
            "mta": self.mta,
            "messageId": self.message_id,
            "queueId": self.queue_id,
            "reason": self.reason,
            "hard": self.hard,
            "verified": self.verified,
        }
        return data


class MessageComplaint(Event, kw_only=True, frozen=True, tag="message.complaint"):
    """A feedback-loop complaint (ARF) found in INBOX, linked to the sent message when known."""

    webhook_event: ClassVar[str | None] = "messageComplaint"
    complaint_message: str  # index id of the report in INBOX
    recipient: str
    feedback_type: str | None = None
    message_id: str | None = None
    queue_id: str | None = None
    verified: bool = True  # as MessageBounce.verified

    def webhook_data(self) -> dict[str, Any]:
        # EmailEngine's ``arf`` and ``headers`` sit directly under ``data``; the flat
        # fields are mailgate's, so subscribers need not dig.
        return {
            "complaintMessage": self.complaint_message,
            "arf": {"feedbackType": self.feedback_type, "originalRcptTo": [self.recipient]},
            "headers": {"messageId": self.message_id},
            "recipient": self.recipient,
            "feedbackType": self.feedback_type,
            "messageId": self.message_id,
            "queueId": self.queue_id,
            "verified": self.verified,
        }


# --- tracking and list unsubscribe (api) ------------------------------------


class _Tracked(Event, kw_only=True, frozen=True, tag="message._tracked"):
    """An open or a click served by the tracking routes, flagged, never dropped.

    ``machine`` marks fetches no person made (``machineReason``: ``apple_mpp``,
    ``scanner_network``, ``image_proxy``, ``head_request``, ``prefetch_timing``);
    webhook endpoints with ``excludeMachine`` do not get them.  ``remote_address``
    and ``user_agent`` are None under the ``trackingPrivacy`` setting.
    """

    message_id: str | None = None
    queue_id: str | None = None
    recipient: str | None = None
    remote_address: str | None = None
    user_agent: str | None = None
    machine: bool = False
    machine_reason: str | None = None

    def webhook_data(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "queueId": self.queue_id,
            "recipient": self.recipient,
            "remoteAddress": self.remote_address,
            "userAgent": self.user_agent,
            "machine": self.machine,
            "machineReason": self.machine_reason,
        }


class TrackOpen(_Tracked, kw_only=True, frozen=True, tag="message.track_open"):
    webhook_event: ClassVar[str | None] = "trackOpen"
    first_open: bool = False  # the first open of this message served (machine ones included)

    def webhook_data(self) -> dict[str, Any]:
        return {**super().webhook_data(), "firstOpen": self.first_open}


class TrackClick(_Tracked, kw_only=True, frozen=True, tag="message.track_click"):
    webhook_event: ClassVar[str | None] = "trackClick"
    url: str

    def webhook_data(self) -> dict[str, Any]:
        return {**super().webhook_data(), "url": self.url}


class ListUnsubscribe(Event, kw_only=True, frozen=True, tag="message.list_unsubscribe"):
    """A recipient left a list (one-click POST, the unsubscribe page, or the blocklist API)."""

    webhook_event: ClassVar[str | None] = "listUnsubscribe"
    recipient: str
    list_id: str
    message_id: str | None = None
    remote_address: str | None = None
    user_agent: str | None = None

    def webhook_data(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "messageId": self.message_id,
            "listId": self.list_id,
            "remoteAddress": self.remote_address,
            "userAgent": self.user_agent,
        }


class ListSubscribe(ListUnsubscribe, kw_only=True, frozen=True, tag="message.list_subscribe"):
    """A recipient rejoined a list (the unsubscribe page's undo, or the blocklist API)."""

    webhook_event: ClassVar[str | None] = "listSubscribe"


# --- inbound mail (smtp-ingress's MX door) -----------------------------------


class InboundMessage(Event, kw_only=True, frozen=True, tag="inbound.message"):
    """A received message a route sends to webhook endpoints: one event per route.

    It names, and does not carry, the message: the webhooks service renders the
    ``inboundMessage`` body from the stored row (``inbound_messages``) with
    ``mailgate_common.inbound.payload`` (``payload``: "json", EmailEngine's
    messageNew shape plus envelope and verdicts, or "raw", the MIME itself).  It
    is delivered to ``endpoints`` only (``/v1/webhooks`` ids), whatever their
    event filters say, and never to the settings or account webhook URLs.
    """

    webhook_event: ClassVar[str | None] = "inboundMessage"
    message: str  # inbound_messages.id
    route: str  # inbound_routes.id
    route_name: str
    recipients: list[str]  # the envelope recipients this route took
    endpoints: list[str]
    payload: Literal["json", "raw"] = "json"

    def webhook_data(self) -> dict[str, Any]:
        # Only what the event knows; the webhooks service renders the full body.
        return {"id": self.message, "route": {"id": self.route, "name": self.route_name},
                "recipients": list(self.recipients)}


AnyEvent = (
    SubmissionQueued
    | AccountChanged
    | MessageSent
    | MessageDeliveryError
    | MessageFailed
    | ImapAppendSent
    | ImapSetFlags
    | ImapFetch
    | ImapCommand
    | AccountCommand
    | MessageNew
    | MessageUpdated
    | MessageDeleted
    | MailboxNew
    | MailboxDeleted
    | AccountState
    | MessageBounce
    | MessageComplaint
    | TrackOpen
    | TrackClick
    | ListUnsubscribe
    | ListSubscribe
    | InboundMessage
)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(body: bytes) -> AnyEvent:
    """Decode any known event; raises msgspec.DecodeError / ValidationError on junk."""
    return _decoder.decode(body)


ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    SubmissionQueued,
    AccountChanged,
    MessageSent,
    MessageDeliveryError,
    MessageFailed,
    ImapAppendSent,
    ImapSetFlags,
    ImapFetch,
    ImapCommand,
    AccountCommand,
    MessageNew,
    MessageUpdated,
    MessageDeleted,
    MailboxNew,
    MailboxDeleted,
    AccountState,
    MessageBounce,
    MessageComplaint,
    TrackOpen,
    TrackClick,
    ListUnsubscribe,
    ListSubscribe,
    InboundMessage,
)

# EmailEngine webhook names subscribers may filter on (settings.webhookEvents).
WEBHOOK_EVENT_NAMES: tuple[str, ...] = (
    "messageNew",
    "messageDeleted",
    "messageUpdated",
    "mailboxNew",
    "mailboxDeleted",
    "messageSent",
    "messageDeliveryError",
    "messageFailed",
    "messageBounce",
    "messageComplaint",
    "trackOpen",
    "trackClick",
    "listUnsubscribe",
    "listSubscribe",
    "inboundMessage",
    "accountAdded",
    "accountDeleted",
    "authenticationError",
    "connectError",
)
