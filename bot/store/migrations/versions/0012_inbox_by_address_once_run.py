"""The inbox's by-user index holds events once run: recording an event (the webhook's own
write) no longer inserts into it at a random place; the pending index holds channel and
address instead, to find a user's pending events (see `schema.inbox`).

Revision ID: 0012_inbox_by_address_once_run
Revises: 0011_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012_inbox_by_address_once_run"
down_revision: str | None = "0011_console"
branch_labels: str | None = None
depends_on: str | None = None

RUN = sa.text("processed_at IS NOT NULL")
PENDING = sa.text("processed_at IS NULL")


def upgrade() -> None:
    op.drop_index("ix_inbox_channel_address", table_name="inbox")
    op.create_index(
        "ix_inbox_done_by_address",
        "inbox",
        ["channel", "address"],
        sqlite_where=RUN,
        postgresql_where=RUN,
    )
    _pending_index(["occurred_at", "id", "channel", "address"])


def downgrade() -> None:
    op.drop_index("ix_inbox_done_by_address", table_name="inbox")
    op.create_index("ix_inbox_channel_address", "inbox", ["channel", "address"])
    _pending_index(["occurred_at", "id"])


def _pending_index(columns: list[str]) -> None:
    op.drop_index("ix_inbox_pending", table_name="inbox")
    op.create_index(
        "ix_inbox_pending", "inbox", columns, sqlite_where=PENDING, postgresql_where=PENDING
    )
