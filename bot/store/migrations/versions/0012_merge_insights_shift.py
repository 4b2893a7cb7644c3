"""Joins the two branches of migrations made side by side: facts (0010_facts, branch
`insights`) and the console's outcomes, reads and saved replies (0011_console, branch
`shift`). Nothing to do; a lead re-chaining the two in one line may delete this.

Revision ID: 0012_merge_insights_shift
Revises: 0010_facts, 0011_console
"""

from __future__ import annotations

revision: str = "0012_merge_insights_shift"
down_revision: tuple[str, ...] = ("0010_facts", "0011_console")
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
