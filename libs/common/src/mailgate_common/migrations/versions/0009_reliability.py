"""one history again; takeovers, unknown outcomes, relay leases, verified bounces, retention

Revision ID: 0009
Revises: 0003, 0004, 0006, 0007, 0008

Merges the five branches that grew from 0002 (so ``alembic revision`` works
again) and adds what the reliability work needs:

* ``outbox.takeovers``: how often a dead claimant's message was taken over;
  past ``sender_max_takeovers`` it is failed instead of sent again;
* the ``unknown`` outbox state (the server may or may not have the message);
* ``outbox.raw`` may be NULL: bodies of finished messages are pruned;
* ``pending_events.claimed_until``: the relay claims rows, commits, then
  publishes (no transaction held open across the broker);
* ``bounces.verified``: a bounce that matches nothing this account sent
  suppresses nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = ("0003", "0004", "0006", "0007", "0008")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("queued", "sending", "sent", "deferred", "failed", "cancelled", "unknown")
OLD_STATES = STATES[:-1]


def _states(values: Sequence[str]) -> str:
    return "state IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.add_column("outbox", sa.Column("takeovers", sa.Integer(), server_default="0", nullable=False))
    op.alter_column("outbox", "raw", nullable=True)
    op.drop_constraint("outbox_state_valid", "outbox", type_="check")
    op.create_check_constraint("outbox_state_valid", "outbox", _states(STATES))
    # Retention walks finished messages by age.
    op.create_index("outbox_finished", "outbox", ["finished_at"],
                    postgresql_where=sa.text("finished_at IS NOT NULL"))
    op.add_column("pending_events", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("bounces", sa.Column("verified", sa.Boolean(), server_default=sa.text("true"), nullable=False))
    op.create_index("bounces_created", "bounces", ["created_at"])


def downgrade() -> None:
    op.drop_index("bounces_created", table_name="bounces")
    op.drop_column("bounces", "verified")
    op.drop_column("pending_events", "claimed_until")
    op.drop_index("outbox_finished", table_name="outbox")
    op.execute("UPDATE outbox SET state = 'failed' WHERE state = 'unknown'")
    op.drop_constraint("outbox_state_valid", "outbox", type_="check")
    op.create_check_constraint("outbox_state_valid", "outbox", _states(OLD_STATES))
    op.execute("UPDATE outbox SET raw = ''::bytea WHERE raw IS NULL")
    op.alter_column("outbox", "raw", nullable=False)
    op.drop_column("outbox", "takeovers")
