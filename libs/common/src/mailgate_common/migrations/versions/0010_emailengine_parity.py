"""EmailEngine parity: submit options, unauthenticated attempts, gateways, token metadata, account logs

Revision ID: 0010
Revises: 0009

* ``outbox.options``: per-message sending options with no column of their own
  (``dsn``, ``gateway``, ``sentMailPath``; see OutboxMessage);
* ``delivery_attempts.authenticated``: whether the attempt logged in (a relay
  that offers no AUTH is used without; the attempt says so);
* ``gateways``: extra SMTP servers an account or a submit can send through;
* ``api_tokens``: EmailEngine's token ``metadata``, ``restrictions`` and ``ip``;
* ``account_logs``: the recent protocol log of accounts whose ``logs`` is on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("options", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                                      nullable=False))
    op.add_column("delivery_attempts", sa.Column("authenticated", sa.Boolean(), nullable=True))
    op.create_table(
        "gateways",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("secure", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        # AES-GCM sealed password, like account credentials.
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("deliveries", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_use", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", postgresql.JSONB(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.add_column("api_tokens", sa.Column("metadata", postgresql.JSONB(), nullable=True))
    op.add_column("api_tokens", sa.Column("restrictions", postgresql.JSONB(), nullable=True))
    op.add_column("api_tokens", sa.Column("ip", sa.Text(), nullable=True))
    op.create_table(
        "account_logs",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.Text(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),  # imap | smtp
        sa.Column("line", sa.Text(), nullable=False),
    )
    op.create_index("account_logs_account", "account_logs", ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("account_logs_account", table_name="account_logs")
    op.drop_table("account_logs")
    op.drop_column("api_tokens", "ip")
    op.drop_column("api_tokens", "restrictions")
    op.drop_column("api_tokens", "metadata")
    op.drop_table("gateways")
    op.drop_column("delivery_attempts", "authenticated")
    op.drop_column("outbox", "options")
