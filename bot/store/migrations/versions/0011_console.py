"""The console for a shift: how a request ended (outcome, chosen on release), what each agent
has read of a request (the unread marker), and the saved replies agents pick from.

Revision ID: 0011_console
Revises: 0010_facts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_console"
down_revision: str | None = "0010_facts"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
    op.create_index("ix_handoffs_closed_at", "handoffs", ["closed_at"])
    op.create_table(
        "handoff_reads",
        sa.Column("handoff_id", ID, nullable=False),
        sa.Column("agent", sa.String(255), nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.id"],
            name="fk_handoff_reads_handoff_id_handoffs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("handoff_id", "agent", name="pk_handoff_reads"),
    )
    op.create_table(
        "canned_replies",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_canned_replies"),
        sa.UniqueConstraint("name", name="uq_canned_replies_name"),
    )


def downgrade() -> None:
    op.drop_table("canned_replies")
    op.drop_table("handoff_reads")
    op.drop_index("ix_handoffs_closed_at", table_name="handoffs")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("outcome")
