"""per-account sending limits and provider throttling

Revision ID: 0007
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("limits", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("accounts", sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("accounts", sa.Column("throttle_level", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "send_windows",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("window", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "window", "starts_at"),
    )


def downgrade() -> None:
    op.drop_table("send_windows")
    op.drop_column("accounts", "throttle_level")
    op.drop_column("accounts", "throttled_until")
    op.drop_column("accounts", "limits")
