"""Agents' sign-in: failed tries (growing delays, lockout), console sessions kept server-side
(logging out revokes one), and API tokens that expire.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_failed_at", TIME, nullable=True))
    with op.batch_alter_table("agent_tokens") as batch:
        batch.add_column(sa.Column("expires_at", TIME, nullable=True))
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_console_sessions"),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_console_sessions_agent_id_agents",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_console_sessions_agent_id", "console_sessions", ["agent_id"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    with op.batch_alter_table("agent_tokens") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("last_failed_at")
        batch.drop_column("failed_logins")
