"""Tables for agents taking over conversations: handoffs, their surface references, the
record of mode changes, agent accounts and their API tokens.

They live on the same `metadata` as `tables.py` (migration 0002 creates them); importing
`bot.store` imports this module, so the metadata is always complete.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

from bot.store.tables import Id, UtcDateTime, metadata

HANDOFF_STATUSES: Final = ("waiting", "claimed", "released", "cancelled")
OPEN_STATUSES: Final = ("waiting", "claimed")

handoffs: Final = sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),  # purge relies on it
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("summary", sa.JSON(), nullable=False),
    sa.Column("requested_at", UtcDateTime(), nullable=False),
    sa.Column("claimed_at", UtcDateTime(), nullable=True),
    sa.Column("agent", sa.String(255), nullable=True),  # who holds it: an agent name, "slack:U…"
    sa.Column("agent_name", sa.String(255), nullable=True),  # shown to the user as the sender
    sa.Column("closed_at", UtcDateTime(), nullable=True),  # released or cancelled
    sa.Column("timeout_notified_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('waiting', 'claimed', 'released', 'cancelled')", name="status"),
    # At most one open handoff per conversation, enforced by the database: a request
    # repeated by a retry or by two processes finds the existing one (ON CONFLICT).
    sa.Index(
        "uq_handoffs_open_conversation",
        "conversation_id",
        unique=True,
        sqlite_where=sa.text("status IN ('waiting', 'claimed')"),
        postgresql_where=sa.text("status IN ('waiting', 'claimed')"),
    ),
    sa.Index(None, "conversation_id", "id"),
    sa.Index(None, "status", "requested_at"),
)

# Where a handoff shows on an agent surface (e.g. surface "slack", ref = the card's ts).
# A table rather than a JSON column on `handoffs`: a surface finds the handoff by its own
# reference (a thread reply names only the thread) through a unique index, and two surfaces
# writing their refs at once never overwrite each other.
handoff_refs: Final = sa.Table(
    "handoff_refs",
    metadata,
    sa.Column(
        "handoff_id",
        Id,
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("surface", sa.String(32), primary_key=True),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.UniqueConstraint("surface", "ref"),
)

mode_changes: Final = sa.Table(
    "mode_changes",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "handoff_id",
        Id,
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("from_mode", sa.String(16), nullable=False),
    sa.Column("to_mode", sa.String(16), nullable=False),
    sa.Column("who", sa.String(255), nullable=False),
    sa.Column("why", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Index(None, "conversation_id", "id"),
)

agents: Final = sa.Table(
    "agents",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.UniqueConstraint("name"),
)

agent_tokens: Final = sa.Table(
    "agent_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "agent_id",
        Id,
        sa.ForeignKey("agents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("token_hash", sa.String(64), nullable=False),  # sha256 hex of a random token
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("token_hash"),
    sa.Index(None, "agent_id"),
)
