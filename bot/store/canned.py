"""`CannedReplyStore`: the saved replies agents pick from (console) or call by keyword (Slack),
kept by admins. Each is a keyword and a text with variables (see `bot.handoff.canned`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.schema import canned_replies
from bot.store.tx import begin, insert, now_or


@dataclass(frozen=True, slots=True, kw_only=True)
class CannedReply:
    id: int
    name: str  # the keyword: unique, one word
    body: str  # the text, with {{name}}, {{role}}, {{agency}}
    updated_by: str
    updated_at: datetime


class CannedReplyStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def all(self) -> list[CannedReply]:
        """Every saved reply, by keyword."""
        async with begin(self._engine) as connection:
            rows = (
                await connection.execute(sa.select(canned_replies).order_by(canned_replies.c.name))
            ).all()
        return [_reply(row._mapping) for row in rows]

    async def get(self, name: str) -> CannedReply | None:
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(canned_replies).where(canned_replies.c.name == name)
                )
            ).one_or_none()
        return _reply(row._mapping) if row is not None else None

    async def save(
        self, name: str, body: str, *, by: str, now: datetime | None = None
    ) -> CannedReply:
        """Add the reply, or replace the text of the one with this keyword."""
        now = now_or(now)
        c = canned_replies.c
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(
                    insert(connection, canned_replies)
                    .values(name=name, body=body, updated_by=by, updated_at=now)
                    .on_conflict_do_update(
                        index_elements=[c.name],
                        set_={"body": body, "updated_by": by, "updated_at": now},
                    )
                    .returning(*canned_replies.c)
                )
            ).one()
        return _reply(row._mapping)

    async def delete(self, name: str) -> bool:
        """Remove the reply with this keyword; False if there was none."""
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.delete(canned_replies)
                .where(canned_replies.c.name == name)
                .returning(canned_replies.c.id)
            )
            return result.scalar_one_or_none() is not None


def _reply(row: sa.RowMapping) -> CannedReply:
    return CannedReply(
        id=row["id"],
        name=row["name"],
        body=row["body"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )
