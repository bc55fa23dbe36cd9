"""bounces and complaints found in INBOXes, linked to the sent message

Revision ID: 0008
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bounces",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("queue_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("mta", sa.Text(), nullable=True),
        sa.Column("feedback_type", sa.Text(), nullable=True),
        sa.Column("bounce_message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('bounce', 'complaint')", name="bounces_kind_valid"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        # The outbox row may be purged later; the bounce stays, unlinked.
        sa.ForeignKeyConstraint(["queue_id"], ["outbox.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        # A resync of the same INBOX message must never record (or announce) twice.
        sa.UniqueConstraint("account_id", "bounce_message", "recipient", name="bounces_once"),
    )
    op.create_index("bounces_queue", "bounces", ["queue_id"])
    # Linking a bounce to what was sent looks the outbox up by Message-ID.
    op.create_index("outbox_message_id", "outbox", ["message_id"])


def downgrade() -> None:
    op.drop_index("outbox_message_id", table_name="outbox")
    op.drop_table("bounces")
