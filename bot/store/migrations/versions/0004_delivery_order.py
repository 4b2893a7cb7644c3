"""Exactly-once delivery after a crash: the outbox keeps its reply token; failed events indexed.

An outbox item remembers the reply token of the event it answers (and when that event
happened), so a delivery cut short by a crash is retried by reply while the token is fresh:
LINE refuses a token that was spent, which then means the reply went out.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("reply_token", sa.String(255), nullable=True))
        batch.add_column(sa.Column("event_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_inbox_failed",
        "inbox",
        ["id"],
        sqlite_where=sa.text("error IS NOT NULL"),
        postgresql_where=sa.text("error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_failed", table_name="inbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("event_at")
        batch.drop_column("reply_token")
