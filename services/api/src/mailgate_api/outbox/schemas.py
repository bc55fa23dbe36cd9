from __future__ import annotations

import msgspec

from mailgate_api.outbox.timeline import Step


class EnvelopeView(msgspec.Struct):
    from_: str = msgspec.field(name="from")
    to: list[str] = msgspec.field(default_factory=list)


class AttemptView(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    attempt: int
    outcome: str
    started: str | None
    finished: str | None
    server: str | None = None
    smtp_response_code: int | None = None
    smtp_status: str | None = None
    response: str | None = None
    error: str | None = None
    # False: the server offered no AUTH and the message went without a login.
    authenticated: bool | None = None


class ProgressError(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    message: str
    status_code: int | None = None


class Progress(msgspec.Struct, kw_only=True, omit_defaults=True):
    """EmailEngine's delivery progress: queued | processing | submitted | error."""

    status: str
    response: str | None = None
    error: ProgressError | None = None


class OutboxEntry(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    queue_id: str
    account: str
    source: str
    message_id: str
    envelope: EnvelopeView
    subject: str | None
    state: str
    created: str | None
    scheduled: str | None
    next_attempt: str | None
    attempts_made: int
    attempts: int
    progress: Progress
    # EmailEngine always has these two keys, null when unset.
    gateway: str | None
    idempotency_key: str | None
    last_error: str | None = None
    smtp_response: str | None = None
    attempts_log: list[AttemptView] | None = None
    timeline: list[Step] | None = None


class TimelineView(msgspec.Struct, rename="camel"):
    queue_id: str
    state: str
    timeline: list[Step]


class OutboxList(msgspec.Struct):
    messages: list[OutboxEntry]
    total: int
    page: int
    pages: int


class OutboxDeleted(msgspec.Struct):
    deleted: bool
