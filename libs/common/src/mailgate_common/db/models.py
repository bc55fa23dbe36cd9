"""The schema.  Migrations in ``mailgate_common/migrations`` create exactly this."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mailgate_common.lifecycle import OUTBOX_STATES, WEBHOOK_STATES


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        str: Text,
        bytes: LargeBinary,
    }


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    email: Mapped[str | None]
    state: Mapped[str] = mapped_column(server_default="new")
    # Connection settings without passwords; None for imap means send-only.
    imap: Mapped[dict[str, Any] | None]
    smtp: Mapped[dict[str, Any] | None]
    # AES-GCM sealed JSON of every password/token of this account.
    credentials: Mapped[bytes | None]
    copy: Mapped[bool | None] = mapped_column(Boolean)
    webhooks: Mapped[str | None]
    # Per-account options with no column of their own (EXTRA_* keys below).
    extra: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    last_error: Mapped[dict[str, Any] | None]
    # Sending limits ({"perSecond", "perMinute", "perHour", "perDay", "connections"});
    # None means the provider's defaults (see mailgate_sender.limits).
    limits: Mapped[dict[str, Any] | None]
    # Set when the account's server asked us to slow down (421 / 4.7.x rate limit).
    throttled_until: Mapped[datetime | None]
    throttle_level: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


# Account.extra keys.  Connect only to public addresses (the settings came from
# an account-scoped token under MAILGATE_ACCOUNT_HOSTS_ALLOW_PRIVATE=false):
EXTRA_PUBLIC_HOSTS_ONLY = "publicHostsOnly"
# Retry a message whose outcome is unknown (it may then arrive twice):
EXTRA_RETRY_UNKNOWN_OUTCOME = "retryUnknownOutcome"


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_in("state", OUTBOX_STATES), name="outbox_state_valid"),
        UniqueConstraint("account_id", "idempotency_key", name="outbox_idempotency"),
        Index(
            "outbox_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('queued', 'deferred')"),
        ),
        Index("outbox_claim_expiry", "claimed_until", postgresql_where=text("state = 'sending'")),
        Index("outbox_account_created", "account_id", "created_at"),
        Index("outbox_finished", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(server_default="api")
    message_id: Mapped[str]
    envelope_from: Mapped[str]
    envelope_to: Mapped[list[str]] = mapped_column(ARRAY(Text))
    subject: Mapped[str | None]
    # None once pruned (outbox_body_retention_days after the message finished).
    raw: Mapped[bytes | None]
    state: Mapped[str] = mapped_column(server_default="queued")
    send_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    # Who holds the "sending" claim; a sender only finishes what it still holds.
    claim_token: Mapped[str | None]
    attempts_made: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer)
    # Times a dead claimant's "sending" claim was taken over (0009).
    takeovers: Mapped[int] = mapped_column(Integer, server_default="0")
    idempotency_key: Mapped[str | None]
    request_hash: Mapped[str | None]
    reference: Mapped[dict[str, Any] | None]
    copy: Mapped[bool | None] = mapped_column(Boolean)
    # Sending options with no column of their own (0010): "dsn" ({id, return,
    # notify, recipient}), "gateway" (a gateways.id), "sentMailPath".
    options: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    last_error: Mapped[str | None]
    smtp_response: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    finished_at: Mapped[datetime | None]


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("delivery_attempts_queue", "queue_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str]  # sent | deferred | failed
    server: Mapped[str | None]
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_status: Mapped[str | None]
    response: Mapped[str | None]
    error: Mapped[str | None]
    # False: the server offered no AUTH and the message went unauthenticated (0010).
    authenticated: Mapped[bool | None] = mapped_column(Boolean)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PendingEvent(Base):
    """Transactional outbox for events: written with the state change, published after."""

    __tablename__ = "pending_events"

    id: Mapped[str] = mapped_column(primary_key=True)
    routing_key: Mapped[str]
    body: Mapped[bytes]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set while a relay publishes the row (0009): claimed, committed, then published.
    claimed_until: Mapped[datetime | None]


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("state", WEBHOOK_STATES), name="webhook_state_valid"),
        # Migration 0004: per (event, url) for settings/account URLs, per
        # (event, endpoint) for webhook endpoints.
        Index(
            "webhook_delivery_once",
            "event_id",
            "url",
            unique=True,
            postgresql_where=text("endpoint_id IS NULL"),
        ),
        Index(
            "webhook_delivery_endpoint_once",
            "event_id",
            "endpoint_id",
            unique=True,
            postgresql_where=text("endpoint_id IS NOT NULL"),
        ),
        Index("webhook_deliveries_endpoint", "endpoint_id", "created_at"),
        Index(
            "webhook_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('pending', 'retrying')"),
        ),
        Index("webhook_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str]
    event: Mapped[str]
    account_id: Mapped[str | None]
    queue_id: Mapped[str | None]
    url: Mapped[str]
    payload: Mapped[bytes]
    state: Mapped[str] = mapped_column(server_default="pending")
    attempts_made: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[str | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    delivered_at: Mapped[datetime | None]
    # None for the settings/account URL; set for a webhook endpoint (0004).
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE", name="webhook_deliveries_endpoint")
    )
    # Retries stop webhook_retry_window seconds after this; a replay resets it.
    retry_from: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("webhook_attempts_delivery", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None]
    response_excerpt: Mapped[str | None]
    duration_ms: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]


class ApiToken(Base):
    """An API/SMTP access token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(primary_key=True)  # sha256 hex of the token
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    description: Mapped[str | None]
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    # EmailEngine's token fields (0010): free-form metadata, {referrers, addresses, rateLimit}, creator's IP.
    metadata_: Mapped[Any | None] = mapped_column("metadata", JSONB)
    restrictions: Mapped[dict[str, Any] | None]
    ip: Mapped[str | None]


class Gateway(Base):
    """An extra SMTP server an account or a submit can send through (EmailEngine's gateways)."""

    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    host: Mapped[str]
    port: Mapped[int] = mapped_column(Integer)
    secure: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    username: Mapped[str | None]
    # AES-GCM sealed password (mailgate_common.crypto), like account credentials.
    credentials: Mapped[bytes | None]
    deliveries: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_use: Mapped[datetime | None]
    last_error: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class AccountLog(Base):
    """One protocol line of an account whose ``logs`` setting is on (secrets masked)."""

    __tablename__ = "account_logs"
    __table_args__ = (Index("account_logs_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    source: Mapped[str]  # imap | smtp
    line: Mapped[str]


class WebhookEndpoint(Base):
    """A subscriber URL with its own filters, headers and signing secret (0004)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(primary_key=True)
    url: Mapped[str]
    # None: a global endpoint; otherwise it only ever sees this account's events.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    description: Mapped[str | None]
    events: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{*}'"))
    accounts: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    headers: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Sealed with crypto.Sealer; the plain secret is shown once, at creation/rotation.
    secret: Mapped[bytes]
    previous_secret: Mapped[bytes | None]
    previous_secret_expires_at: Mapped[datetime | None]
    # Opens and clicks flagged as machine-made are not delivered here (0012).
    exclude_machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    first_failure_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    backoff_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Suppression(Base):
    """An address mailgate must not send to: per account, or for everyone (0006)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        CheckConstraint("source IN ('bounce', 'complaint', 'manual')", name="suppressions_source_valid"),
        CheckConstraint("address = lower(address)", name="suppressions_address_lower"),
        # unique (account_id, address) with NULL (= global) counted as one value.
        Index(
            "suppressions_account_address", "account_id", "address", unique=True,
            postgresql_where=text("account_id IS NOT NULL"),
        ),
        Index(
            "suppressions_global_address", "address", unique=True,
            postgresql_where=text("account_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # None: suppressed for every account.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    address: Mapped[str]  # lower-cased
    reason: Mapped[str]
    source: Mapped[str]  # bounce | complaint | manual
    # The bounce or complaint it came from: queueId, messageId, status, diagnostic.
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class SendWindow(Base):
    """Messages sent per account per rate window, shared by every sender replica."""

    __tablename__ = "send_windows"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    window: Mapped[str] = mapped_column(primary_key=True)  # second | minute | hour | day
    starts_at: Mapped[datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class Mailbox(Base):
    """A folder of an IMAP account, as imap-sync last saw it."""

    __tablename__ = "mailboxes"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(primary_key=True)
    special_use: Mapped[str | None]
    delimiter: Mapped[str | None]
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    messages: Mapped[int] = mapped_column(Integer, server_default="0")
    synced_at: Mapped[datetime | None]


class IndexedMessage(Base):
    """One message of a synced folder; ``id`` is the stable opaque id the API hands out."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("account_id", "path", "uidvalidity", "uid", name="messages_uid_once"),
        Index("messages_listing", "account_id", "path", text("uid DESC")),
        Index("messages_message_id", "account_id", "message_id"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    path: Mapped[str]
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    size: Mapped[int | None] = mapped_column(BigInteger)
    internal_date: Mapped[datetime | None]
    message_id: Mapped[str | None]
    subject: Mapped[str | None]
    from_addr: Mapped[Any | None] = mapped_column(JSONB)
    to_addr: Mapped[Any | None] = mapped_column(JSONB)
    cc_addr: Mapped[Any | None] = mapped_column(JSONB)
    date: Mapped[datetime | None]
    in_reply_to: Mapped[str | None]
    references: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AccountLease(Base):
    """Which imap-sync replica watches an account, until when (renewed by heartbeat)."""

    __tablename__ = "account_leases"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str]
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ImapReplica(Base):
    """A live imap-sync replica (heartbeat), so replicas can share accounts fairly."""

    __tablename__ = "imap_replicas"

    holder: Mapped[str] = mapped_column(primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Bounce(Base):
    """A bounce or complaint found in an account's INBOX, one row per recipient (0008)."""

    __tablename__ = "bounces"
    __table_args__ = (
        CheckConstraint("kind IN ('bounce', 'complaint')", name="bounces_kind_valid"),
        # A resync of the same INBOX message must never record (or announce) twice.
        UniqueConstraint("account_id", "bounce_message", "recipient", name="bounces_once"),
        Index("bounces_queue", "queue_id"),
        Index("bounces_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # The sent message it is about; None when no outbox row has its Message-ID.
    queue_id: Mapped[str | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    message_id: Mapped[str | None]  # Message-ID of the original message
    kind: Mapped[str]  # bounce | complaint
    recipient: Mapped[str]
    action: Mapped[str | None]
    status: Mapped[str | None]
    reply_code: Mapped[int | None] = mapped_column(Integer)
    diagnostic: Mapped[str | None]
    reason: Mapped[str]
    hard: Mapped[bool] = mapped_column(Boolean)
    mta: Mapped[str | None]
    feedback_type: Mapped[str | None]
    bounce_message: Mapped[str]  # index id of the DSN / report in INBOX
    # Linked to a message this account sent to this recipient (0009); only a
    # verified bounce or complaint suppresses the address.
    verified: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


# Bounces are linked to what was sent by Message-ID (0008).
Index("outbox_message_id", OutboxMessage.message_id)


class Template(Base):
    """A stored message template (EmailEngine's /v1/templates): Handlebars parts in ``content``."""

    __tablename__ = "templates"
    __table_args__ = (
        CheckConstraint("format IN ('html', 'markdown')", name="templates_format"),
        Index("templates_account", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    # None: a public template, usable by every account (only an admin token writes one).
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str]
    description: Mapped[str | None]
    format: Mapped[str] = mapped_column(server_default="html")  # html | markdown
    # {subject, text, html, previewText}, EmailEngine's wire names; absent parts are left out.
    content: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    # Inline the html's <style> rules into style attributes when rendering (css-inline; 0012).
    inline_css: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class BlocklistEntry(Base):
    """A recipient blocked for one list (EmailEngine's /v1/blocklist/{listId}; 0012).

    List-scoped on purpose: unsubscribing from a newsletter never blocks a
    password reset, which only the transactional ``suppressions`` could do.
    """

    __tablename__ = "blocklist_entries"
    __table_args__ = (CheckConstraint("address = lower(address)", name="blocklist_entries_address_lower"),)

    list_id: Mapped[str] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(primary_key=True)  # lower-cased
    account_id: Mapped[str | None]
    message_id: Mapped[str | None]
    source: Mapped[str] = mapped_column(server_default="api")  # api | unsubscribe | one-click
    reason: Mapped[str] = mapped_column(server_default="block")
    remote_address: Mapped[str | None]
    user_agent: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TrackingEvent(Base):
    """An open or click served by the tracking routes, with its machine verdict (0012)."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        CheckConstraint("kind IN ('open', 'click')", name="tracking_events_kind"),
        Index("tracking_events_message", "queue_id", "kind"),
        Index("tracking_events_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str]  # open | click
    account_id: Mapped[str | None]
    queue_id: Mapped[str | None]
    message_id: Mapped[str | None]
    recipient: Mapped[str | None]
    url: Mapped[str | None]
    machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    machine_reason: Mapped[str | None]
    first: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Empty under the trackingPrivacy setting: only the verdicts are kept.
    remote_address: Mapped[str | None]
    user_agent: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class InboundRoute(Base):
    """What the MX door accepts and what happens to it (0013; see mailgate_common.inbound.routes)."""

    __tablename__ = "inbound_routes"
    __table_args__ = (Index("inbound_routes_order", "priority", "created_at"),)

    id: Mapped[str] = mapped_column(primary_key=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str]
    description: Mapped[str | None]
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    priority: Mapped[int] = mapped_column(Integer, server_default="100")
    match: Mapped[dict[str, Any]]
    domain: Mapped[str | None]  # lower-cased; None for a regex route
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    max_size: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class InboundMessage(Base):
    """A message the MX door accepted, committed before its 250 (0013)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("inbound_messages_received", "received_at"),
        Index("inbound_messages_held", "received_at", postgresql_where=text("held")),
    )

    id: Mapped[str] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    remote_ip: Mapped[str | None]
    helo: Mapped[str | None]
    mail_from: Mapped[str] = mapped_column(server_default="")
    rcpt_to: Mapped[list[str]] = mapped_column(ARRAY(Text))
    tls: Mapped[str | None]
    size: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None]
    subject: Mapped[str | None]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    auth: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    spam: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    automated: Mapped[str | None]
    deliveries: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    held: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
