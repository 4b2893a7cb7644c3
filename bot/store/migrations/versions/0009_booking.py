"""Booking consultations: agents' availability, users' contact details with consent, bookings
(one per slot and one open per user, enforced by partial unique indexes).

Revision ID: 0009_booking
Revises: 0008_timers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_booking"
down_revision: str | None = "0008_timers"  # the timers of branch followups, merged here
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported (see 0001).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
BOOKED = sa.text("status = 'booked'")


def upgrade() -> None:
    op.create_table(
        "availability",
        sa.Column("id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=True),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("start_time", sa.String(5), nullable=True),
        sa.Column("end_time", sa.String(5), nullable=True),
        sa.CheckConstraint("kind IN ('weekly', 'extra', 'off')", name="ck_availability_kind"),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_availability_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_availability"),
    )
    op.create_index("ix_availability_agent_id", "availability", ["agent_id"])
    op.create_table(
        "contacts",
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("consent_at", TIME, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("method IN ('chat', 'phone', 'email')", name="ck_contacts_method"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_contacts_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_contacts"),
    )
    op.create_table(
        "bookings",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("agent_id", ID, nullable=False),
        sa.Column("starts_at", TIME, nullable=False),
        sa.Column("ends_at", TIME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("cancelled_at", TIME, nullable=True),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.CheckConstraint("status IN ('booked', 'cancelled', 'done')", name="ck_bookings_status"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_bookings_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_bookings_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bookings"),
        sa.UniqueConstraint("token", name="uq_bookings_token"),
    )
    op.create_index(
        "uq_bookings_slot",
        "bookings",
        ["agent_id", "starts_at"],
        unique=True,
        sqlite_where=BOOKED,
        postgresql_where=BOOKED,
    )
    op.create_index(
        "uq_bookings_open_conversation",
        "bookings",
        ["conversation_id"],
        unique=True,
        sqlite_where=BOOKED,
        postgresql_where=BOOKED,
    )
    op.create_index("ix_bookings_starts_at", "bookings", ["starts_at"])


def downgrade() -> None:
    op.drop_table("bookings")
    op.drop_table("contacts")
    op.drop_table("availability")
