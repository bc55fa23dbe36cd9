"""Stored templates (EmailEngine's /v1/templates)

Revision ID: 0011
Revises: 0010

``templates``: a message's subject, text, html and preview text as Handlebars,
owned by one account or public (``account_id`` null, admin-written).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("account_id", sa.Text(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("format", sa.Text(), server_default="html", nullable=False),
        sa.Column("content", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("format IN ('html', 'markdown')", name="templates_format"),
    )
    op.create_index("templates_account", "templates", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("templates_account", table_name="templates")
    op.drop_table("templates")
