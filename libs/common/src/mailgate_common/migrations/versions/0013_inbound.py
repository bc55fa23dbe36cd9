"""Inbound mail: routes for the MX door and the messages it received

Revision ID: 0013
Revises: 0012

``inbound_routes``: what the MX door accepts and what happens to it.  A route
matches a recipient (an exact address, plus-tags stripped and kept; a domain
catch-all; or a regex with captures), optionally headers and the message's
authentication verdicts, and carries an ordered list of actions (webhook,
hold, reject, stop).  Routes run by ``priority`` (lower first); every matching
route applies until one with a ``stop`` action.

``inbound_messages``: every message the door accepted, committed before its
``250``: the raw bytes, the envelope, the authentication and spam verdicts and
which routes took it (``deliveries``).  Held messages stay until deleted;
the rest follow the retention settings.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_routes",
        sa.Column("id", sa.Text(), primary_key=True),
        # None: an admin's route; else the account whose webhooks and token own it.
        sa.Column("account_id", sa.Text(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="100"),
        # {"recipient" | "domain" | "recipientRegex", "headers": [{name, regex}], "auth": {...}}
        sa.Column("match", postgresql.JSONB(), nullable=False),
        # The lower-cased domain the recipient criterion names (None for a regex): the
        # door's accept-list, so an unrouted domain is refused at RCPT.
        sa.Column("domain", sa.Text(), nullable=True),
        # [{"type": "webhook" | "hold" | "reject" | "stop", ...}]
        sa.Column("actions", postgresql.JSONB(), nullable=False),
        sa.Column("max_size", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("inbound_routes_order", "inbound_routes", ["priority", "created_at"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("remote_ip", sa.Text(), nullable=True),
        sa.Column("helo", sa.Text(), nullable=True),
        sa.Column("mail_from", sa.Text(), nullable=False, server_default=""),
        sa.Column("rcpt_to", postgresql.ARRAY(sa.Text()), nullable=False),
        # The TLS version the session used ("TLSv1.3"), None in the clear.
        sa.Column("tls", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        # {"spf": {...}, "dkim": [...], "dmarc": {...}, "authenticationResults": "..."}
        sa.Column("auth", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        # {"checked": false} unless rspamd is configured
        sa.Column("spam", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        # Why it is machine-made ("auto-replied", "bounce", "list", ...), None for a person's mail.
        sa.Column("automated", sa.Text(), nullable=True),
        # [{"route", "recipient", "tag", "captures", "actions"}]: who took it and what they do.
        sa.Column("deliveries", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.create_index("inbound_messages_received", "inbound_messages", ["received_at"])
    op.create_index("inbound_messages_held", "inbound_messages", ["received_at"],
                    postgresql_where=sa.text("held"))


def downgrade() -> None:
    op.drop_index("inbound_messages_held", table_name="inbound_messages")
    op.drop_index("inbound_messages_received", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("inbound_routes_order", table_name="inbound_routes")
    op.drop_table("inbound_routes")
