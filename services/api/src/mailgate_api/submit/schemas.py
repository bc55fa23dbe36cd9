from __future__ import annotations

from typing import Literal

import msgspec


class ReferenceResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """EmailEngine's ``reference`` in the submit answer: was the referenced message used."""

    message: str
    success: bool
    error: str | None = None


class IdempotencyResult(msgspec.Struct, kw_only=True):
    key: str
    # MISS: answered now; HIT: the first answer for this key, replayed.
    status: Literal["MISS", "HIT"]


class SubmitResponse(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    response: str
    message_id: str
    # Absent on a dry run, which queues nothing.
    send_at: str | None = None
    queue_id: str | None = None
    reference: ReferenceResult | None = None
    # A dry run's built message (RFC 822, base64).
    preview: str | None = None
    idempotency: IdempotencyResult | None = None


class MergeTo(msgspec.Struct, kw_only=True, omit_defaults=True):
    address: str
    name: str | None = None


class MergeSkipped(msgspec.Struct, kw_only=True, rename="camel"):
    """Why a recipient was not queued: ``listId`` names the list that blocks them (null: suppressed)."""

    reason: str
    list_id: str | None = None


class MergeResult(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """EmailEngine's ``BulkResponseEntry``: one per ``mailMerge`` entry, in order."""

    success: bool
    to: MergeTo
    message_id: str | None = None
    queue_id: str | None = None
    send_at: str | None = None
    error: str | None = None
    code: str | None = None
    status_code: int | None = None
    skipped: MergeSkipped | None = None


class MergeResponse(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    mail_merge: list[MergeResult]
    idempotency: IdempotencyResult | None = None
