"""Facts and their daily counts: the counting every insert of facts goes through, and the
facts recorded outside a turn (a handoff claimed or released, a conversation abandoned; a
turn's own facts are saved with the turn)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.records import EVENT_KINDS, Fact, event_step
from bot.store.db import Database
from bot.store.schema import conversations, fact_counts, facts
from bot.store.tx import built_once, insert, insert_for, now_or

COUNT_DAYS: Final = timezone(timedelta(hours=9), "JST")
"""Facts are counted per Japanese day of their run (Japan keeps no summer time)."""
UNCOUNTED: Final = frozenset({"entered"})
"""Kinds kept as facts only (the page reads none of their counts)."""
RETURNED: Final = (
    facts.c.run_at,
    facts.c.flow,
    facts.c.kind,
    facts.c.state,
    facts.c.value,
    facts.c.how,
    facts.c.variant,
    facts.c.channel,
    facts.c.flow_version,
    facts.c.seconds,
)
"""What an insert of facts returns for counting (of the rows actually inserted)."""
_KEY: Final = ("flow", "kind", "day", "state", "value", "how", "variant", "channel", "flow_version")


def seconds_bucket(seconds: float) -> int:
    """Time to answer, counted in buckets (their lower bounds): by the second under 10 s,
    then 5 s under a minute, 30 s under 5 minutes, 5 minutes under an hour, then hours."""
    s = max(0, int(seconds))
    for limit, width in ((10, 1), (60, 5), (300, 30), (3600, 300)):
        if s < limit:
            return s - s % width
    return min(s - s % 3600, 86400)


def count_deltas(rows: Iterable[Sequence[Any]]) -> dict[tuple[Any, ...], int]:
    """The counts to add for inserted facts (rows as `RETURNED`)."""
    deltas: dict[tuple[Any, ...], int] = {}
    for run_at, flow, kind, state, value, how, variant, channel, version, seconds in rows:
        if kind in UNCOUNTED:
            continue
        day: date = run_at.astimezone(COUNT_DAYS).date()
        values = (value or "").split(",") if kind == "pick" else [value or ""]
        for one in values:
            key = (flow, kind, day, state or "", one, how or "", variant, channel, version)
            deltas[key] = deltas.get(key, 0) + 1
        if kind == "answer" and seconds is not None:
            key = (flow, "seconds", day, state or "", str(seconds_bucket(seconds)), "", variant, channel, version)  # fmt: skip
            deltas[key] = deltas.get(key, 0) + 1
    return deltas


@built_once
def _add_to_counts(dialect: str) -> sa.Insert:
    statement = insert_for(dialect, fact_counts)
    return statement.on_conflict_do_update(
        index_elements=list(_KEY), set_={"n": fact_counts.c.n + statement.excluded.n}
    )


async def add_counts(connection: AsyncConnection, rows: Iterable[Sequence[Any]]) -> None:
    """Add inserted facts to the daily counts, in the facts' own transaction."""
    deltas = count_deltas(rows)
    if not deltas:
        return
    # In one order everywhere: two transactions never wait for each other's rows crosswise.
    await connection.execute(
        _add_to_counts(connection),
        [{**dict(zip(_KEY, key, strict=True)), "n": n} for key, n in sorted(deltas.items())],
    )


async def record_fact(
    connection: AsyncConnection, conversation_id: int, fact: Fact, now: datetime
) -> None:
    """Record `fact` of the conversation's current run (nothing before its first run); an
    event that is a funnel step (a handoff requested or claimed, a booking) is also the run's
    step `@kind`, counted once per run."""
    await _record_one(connection, conversation_id, fact, now)
    if fact.kind in EVENT_KINDS:
        step = Fact(kind="step", value=event_step(fact.kind))
        await _record_one(connection, conversation_id, step, now, once=True)


async def _record_one(
    connection: AsyncConnection,
    conversation_id: int,
    fact: Fact,
    now: datetime,
    *,
    once: bool = False,
) -> None:
    c = conversations.c
    statement = insert(connection, facts)
    if once:
        statement = statement.on_conflict_do_nothing(
            index_elements=[facts.c.conversation_id, facts.c.run_at, facts.c.value],
            index_where=sa.text("kind = 'step'"),
        )
    inserted = await connection.execute(
        statement.from_select(
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
        ).returning(*RETURNED)
    )
    await add_counts(connection, inserted.all())


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
                sa.insert(facts)
                .from_select(
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
                .returning(*RETURNED)
            )
            inserted = result.all()
            await add_counts(connection, inserted)
        return len(inserted)
