"""Open/click tracking, list unsubscribe (blocklists) and CSS inlining for templates

Revision ID: 0012
Revises: 0011

``blocklist_entries``: EmailEngine's per-list blocklists (``/v1/blocklist/{listId}``).
A recipient who unsubscribes from a list is blocked for that list only, never
for transactional mail: the transactional ``suppressions`` table is not touched.

``tracking_events``: every open and click served, kept with its machine verdict
(flagged, never dropped); ``remote_address`` and ``user_agent`` stay empty when
the ``trackingPrivacy`` setting is on.

``webhook_endpoints.exclude_machine``: the endpoint does not want opens and
clicks flagged as machine-made.  ``templates.inline_css``: the template's
``<style>`` rules are inlined into its html at render time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocklist_entries",
        sa.Column("list_id", sa.Text(), primary_key=True),
        sa.Column("address", sa.Text(), primary_key=True),
        # The account whose mail the recipient unsubscribed from (EmailEngine's ``account``).
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False, server_default="api"),
        sa.Column("reason", sa.Text(), nullable=False, server_default="block"),
        sa.Column("remote_address", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("address = lower(address)", name="blocklist_entries_address_lower"),
    )
    op.create_table(
        "tracking_events",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("queue_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("machine_reason", sa.Text(), nullable=True),
        sa.Column("first", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("remote_address", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('open', 'click')", name="tracking_events_kind"),
    )
    op.create_index("tracking_events_message", "tracking_events", ["queue_id", "kind"])
    op.create_index("tracking_events_created", "tracking_events", ["created_at"])
    op.add_column("webhook_endpoints", sa.Column("exclude_machine", sa.Boolean(), nullable=False,
                                                 server_default=sa.text("false")))
    op.add_column("templates", sa.Column("inline_css", sa.Boolean(), nullable=False,
                                         server_default=sa.text("false")))


def downgrade() -> None:
    op.drop_column("templates", "inline_css")
    op.drop_column("webhook_endpoints", "exclude_machine")
    op.drop_index("tracking_events_created", table_name="tracking_events")
    op.drop_index("tracking_events_message", table_name="tracking_events")
    op.drop_table("tracking_events")
    op.drop_table("blocklist_entries")
