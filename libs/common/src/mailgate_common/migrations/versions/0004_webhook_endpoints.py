"""webhook endpoints, and deliveries linked to them

Revision ID: 0004
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("events", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{*}'"), nullable=False),
        sa.Column("accounts", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backoff_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.add_column("webhook_deliveries", sa.Column("endpoint_id", sa.Text(), nullable=True))
    op.add_column(
        "webhook_deliveries",
        sa.Column("retry_from", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_foreign_key(
        "webhook_deliveries_endpoint", "webhook_deliveries", "webhook_endpoints",
        ["endpoint_id"], ["id"], ondelete="CASCADE",
    )
    # Two endpoints may share a URL, so an endpoint delivery is unique per
    # (event, endpoint); settings/account URL deliveries stay unique per (event, url).
    op.drop_constraint("webhook_delivery_once", "webhook_deliveries", type_="unique")
    op.create_index(
        "webhook_delivery_once", "webhook_deliveries", ["event_id", "url"], unique=True,
        postgresql_where=sa.text("endpoint_id IS NULL"),
    )
    op.create_index(
        "webhook_delivery_endpoint_once", "webhook_deliveries", ["event_id", "endpoint_id"], unique=True,
        postgresql_where=sa.text("endpoint_id IS NOT NULL"),
    )
    op.create_index("webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "created_at"])


def downgrade() -> None:
    op.drop_index("webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_index("webhook_delivery_endpoint_once", table_name="webhook_deliveries")
    op.drop_index("webhook_delivery_once", table_name="webhook_deliveries")
    op.execute("DELETE FROM webhook_deliveries WHERE endpoint_id IS NOT NULL")
    op.create_unique_constraint("webhook_delivery_once", "webhook_deliveries", ["event_id", "url"])
    op.drop_constraint("webhook_deliveries_endpoint", "webhook_deliveries", type_="foreignkey")
    op.drop_column("webhook_deliveries", "retry_from")
    op.drop_column("webhook_deliveries", "endpoint_id")
    op.drop_table("webhook_endpoints")
