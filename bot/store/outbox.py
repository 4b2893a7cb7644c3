"""The outbox: replies saved with their turn, until delivered or given up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.models import Channel
from bot.records import OutboxItem
from bot.store.db import Database
from bot.store.schema import outbox
from bot.store.tx import IN_LIST, now_or


class Outbox(Database):
    """Undelivered replies; each method is one transaction."""

    async def outbox_pending(
        self,
        *,
        limit: int = 100,
        channel: Channel | None = None,
        conversation_ids: Sequence[int] | None = None,
        after_id: int = 0,
    ) -> list[OutboxItem]:
        """Undelivered messages, oldest first; optionally of one channel or some
        conversations only, and past `after_id` (for paging)."""
        o = outbox.c
        where: list[sa.ColumnElement[bool]] = [o.status == "pending", o.id > after_id]
        if channel is not None:
            where.append(o.channel == channel.value)
        if conversation_ids is not None:
            where.append(o.conversation_id.in_(sorted(set(conversation_ids))[:IN_LIST]))
        async with self._read() as connection:
            rows = (
                await connection.execute(
                    sa.select(outbox).where(*where).order_by(o.id).limit(limit)
                )
            ).all()
        return [_outbox_item(row._mapping) for row in rows]

    async def mark_sent(self, outbox_id: int, *, now: datetime | None = None) -> None:
        await self._attempted(outbox_id, status="sent", sent_at=now_or(now))

    async def mark_sent_many(
        self, outbox_ids: Sequence[int], *, now: datetime | None = None
    ) -> list[None]:
        """`mark_sent` for many items in one transaction (a group commit of deliveries).

        Returns one None per id given, as `GroupCommit` expects."""
        sent_at = now_or(now)
        unique = sorted(set(outbox_ids))
        async with self._begin() as connection:
            for start in range(0, len(unique), IN_LIST):
                await connection.execute(
                    sa.update(outbox)
                    .where(outbox.c.id.in_(unique[start : start + IN_LIST]))
                    .values(attempts=outbox.c.attempts + 1, status="sent", sent_at=sent_at)
                )
        return [None] * len(outbox_ids)

    async def mark_failed(self, outbox_id: int, error: str) -> None:
        """Give up on delivering this item."""
        await self._attempted(outbox_id, status="failed", last_error=error)

    async def bump_attempt(self, outbox_id: int, error: str) -> None:
        """A delivery attempt failed; the item stays pending for another try."""
        await self._attempted(outbox_id, last_error=error)

    async def _attempted(self, outbox_id: int, **values: Any) -> None:
        async with self._begin() as connection:
            await connection.execute(
                sa.update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(attempts=outbox.c.attempts + 1, **values)
            )


def _outbox_item(row: sa.RowMapping) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        conversation_id=row["conversation_id"],
        channel=Channel(row["channel"]),
        address=row["address"],
        payload=row["payload"],
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        reply_token=row["reply_token"],
        event_at=row["event_at"],
    )
