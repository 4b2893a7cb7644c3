"""Facts for funnel analytics and A/B tests: a `facts` table with its daily counts, and each
conversation's variant and the start of its current run.

Revision ID: 0010_facts
Revises: 0009_booking
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_facts"
down_revision: str | None = "0009_booking"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("variant", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("run_at", TIME, nullable=True))
    op.create_table(
        "facts",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("run_at", TIME, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(128), nullable=True),
        sa.Column("value", sa.String(255), nullable=True),
        sa.Column("how", sa.String(16), nullable=True),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_facts_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_facts"),
    )
    op.create_index("ix_facts_conversation_id_run_at", "facts", ["conversation_id", "run_at"])
    op.create_index(
        "uq_facts_step",
        "facts",
        ["conversation_id", "run_at", "value"],
        unique=True,
        sqlite_where=sa.text("kind = 'step'"),
        postgresql_where=sa.text("kind = 'step'"),
    )

    op.create_table(
        "fact_counts",
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("state", sa.String(128), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("how", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("flow_version", sa.String(64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "flow",
            "kind",
            "day",
            "state",
            "value",
            "how",
            "variant",
            "channel",
            "flow_version",
            name="pk_fact_counts",
        ),
    )
    op.create_index(
        "ix_fact_counts_flow_kind_day",
        "fact_counts",
        ["flow", "kind", "day"],
        postgresql_include=["state", "value", "how", "variant", "channel", "n"],
    )


def downgrade() -> None:
    op.drop_table("fact_counts")
    op.drop_table("facts")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("run_at")
        batch.drop_column("variant")
