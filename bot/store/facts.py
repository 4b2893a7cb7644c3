"""Facts recorded outside a turn: a handoff claimed or released, a conversation abandoned
(see `bot.store.schema.facts`; a turn's own facts are saved with the turn)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.records import Fact
from bot.store.db import Database
from bot.store.schema import conversations, facts
from bot.store.tx import now_or


async def record_fact(
    connection: AsyncConnection, conversation_id: int, fact: Fact, now: datetime
) -> None:
    """Record `fact` of the conversation's current run (nothing before its first run)."""
    c = conversations.c
    await connection.execute(
        sa.insert(facts).from_select(
            [
                "conversation_id",
                "run_at",
                "at",
                "kind",
                "flow",
                "flow_version",
                "variant",
                "channel",
                "state",
                "value",
            ],
            sa.select(
                c.id,
                c.run_at,
                sa.literal(now, facts.c.at.type),
                sa.literal(fact.kind),
                c.flow,
                c.flow_version,
                c.variant,
                c.channel,
                c.state if fact.state is None else sa.literal(fact.state),
                sa.literal(fact.value, sa.String()),
            ).where(c.id == conversation_id, c.run_at.is_not(None)),
        )
    )


class Abandonment(Database):
    async def mark_abandoned(self, *, idle_since: datetime, now: datetime | None = None) -> int:
        """Record `abandoned` for each run left without a message since `idle_since` (with the
        bot, not ended, not already marked); how many were. The state is where they left."""
        now = now_or(now)
        c, f = conversations.c, facts.c
        marked = sa.exists().where(
            f.conversation_id == c.id,
            f.run_at == c.run_at,
            f.kind.in_(("abandoned", "ended")),
        )
        async with self._begin() as connection:
            result = await connection.execute(
                sa.insert(facts).from_select(
                    [
                        "conversation_id",
                        "run_at",
                        "at",
                        "kind",
                        "flow",
                        "flow_version",
                        "variant",
                        "channel",
                        "state",
                    ],
                    sa.select(
                        c.id,
                        c.run_at,
                        sa.literal(now, facts.c.at.type),
                        sa.literal("abandoned"),
                        c.flow,
                        c.flow_version,
                        c.variant,
                        c.channel,
                        c.state,
                    ).where(
                        c.run_at.is_not(None),
                        c.updated_at < idle_since,
                        c.status == "active",
                        c.mode == "bot",
                        ~marked,
                    ),
                )
            )
        return int(result.rowcount or 0)
