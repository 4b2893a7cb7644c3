"""Handoffs to agents, their surface references, mode changes, agent accounts and tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
OPEN = "status IN ('waiting', 'claimed')"


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("requested_at", TIME, nullable=False),
        sa.Column("claimed_at", TIME, nullable=True),
        sa.Column("agent", sa.String(255), nullable=True),
        sa.Column("agent_name", sa.String(255), nullable=True),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("timeout_notified_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_handoffs"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_handoffs_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('waiting', 'claimed', 'released', 'cancelled')", name="ck_handoffs_status"
        ),
    )
    op.create_index(
        "uq_handoffs_open_conversation",
        "handoffs",
        ["conversation_id"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index("ix_handoffs_conversation_id_id", "handoffs", ["conversation_id", "id"])
    op.create_index("ix_handoffs_status_requested_at", "handoffs", ["status", "requested_at"])

    op.create_table(
        "handoff_refs",
        sa.Column("handoff_id", ID, nullable=False),
        sa.Column("surface", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("handoff_id", "surface", name="pk_handoff_refs"),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.id"],
            name="fk_handoff_refs_handoff_id_handoffs",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("surface", "ref", name="uq_handoff_refs_surface_ref"),
    )

    op.create_table(
        "mode_changes",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("handoff_id", ID, nullable=True),
        sa.Column("from_mode", sa.String(16), nullable=False),
        sa.Column("to_mode", sa.String(16), nullable=False),
        sa.Column("who", sa.String(255), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mode_changes"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_mode_changes_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.id"],
            name="fk_mode_changes_handoff_id_handoffs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_mode_changes_conversation_id_id", "mode_changes", ["conversation_id", "id"])

    op.create_table(
        "agents",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
    )

    op.create_table(
        "agent_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_used_at", TIME, nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_tokens"),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_tokens_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="uq_agent_tokens_token_hash"),
    )
    op.create_index("ix_agent_tokens_agent_id", "agent_tokens", ["agent_id"])


def downgrade() -> None:
    op.drop_table("agent_tokens")
    op.drop_table("agents")
    op.drop_table("mode_changes")
    op.drop_table("handoff_refs")
    op.drop_table("handoffs")
