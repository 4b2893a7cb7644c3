"""The queries behind /console/insights: counts over the facts of the runs begun in a period
(one flow, optionally one channel). Each is one indexed scan of `facts` (see bench/insights.py)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.store.schema import facts
from bot.store.tx import begin

EVENT_KINDS = ("handoff_requested", "handoff_claimed", "booking_made")
"""Funnel steps reached outside the flow's own states (counted once per run at query time)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """The runs of one flow begun in [since, until), on one channel or all (None)."""

    flow: str
    since: datetime
    until: datetime
    channel: str | None = None
    utc_offset: timedelta = timedelta(hours=9)  # days of the daily trend (Asia/Tokyo)


class InsightsStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def steps(self, period: Period) -> dict[tuple[str, str], int]:
        """(step id, variant): runs that reached the flow's own funnel steps."""
        f = facts.c
        query = (
            sa.select(f.value, f.variant, sa.func.count())
            .where(*_within(period, "step"))
            .group_by(f.value, f.variant)
        )
        return await self._counts(query)

    async def events(self, period: Period) -> dict[tuple[str, str], int]:
        """(event kind, variant): runs in which a handoff was requested, claimed, a booking made."""
        f = facts.c
        runs = (
            sa.select(f.kind, f.variant, f.conversation_id, f.run_at)
            .where(*_within(period, *EVENT_KINDS))
            .distinct()
            .subquery()
        )
        query = sa.select(runs.c.kind, runs.c.variant, sa.func.count()).group_by(
            runs.c.kind, runs.c.variant
        )
        return await self._counts(query)

    async def abandoned(self, period: Period) -> dict[str, int]:
        """state: runs abandoned there (no message for ABANDON_AFTER_HOURS)."""
        f = facts.c
        query = (
            sa.select(f.state, sa.func.count())
            .where(*_within(period, "abandoned"))
            .group_by(f.state)
        )
        return {key[0]: n for key, n in (await self._counts(query)).items()}

    async def median_seconds(self, period: Period) -> dict[str, float]:
        """question: median seconds from being asked to answered."""
        f = facts.c
        where = (*_within(period, "answer"), f.seconds.is_not(None))
        async with begin(self._engine) as connection:
            if connection.dialect.name == "postgresql":
                median = sa.func.percentile_cont(0.5).within_group(f.seconds)
                rows = await connection.execute(
                    sa.select(f.state, median).where(*where).group_by(f.state)
                )
                return {state: float(value) for state, value in rows}
            # SQLite has no percentile: its single-host scale reads the values.
            rows = await connection.execute(sa.select(f.state, f.seconds).where(*where))
            values: dict[str, list[float]] = {}
            for state, seconds in rows:
                values.setdefault(state, []).append(seconds)
        return {state: statistics.median(found) for state, found in values.items()}

    async def answers(self, period: Period, questions: Sequence[str]) -> dict[tuple[str, str], int]:
        """(question, answer value): how often each answer was given."""
        f = facts.c
        query = (
            sa.select(f.state, f.value, sa.func.count())
            .where(*_within(period, "answer"), f.state.in_(list(questions)))
            .group_by(f.state, f.value)
        )
        return await self._counts(query)

    async def results(self, period: Period, states: Sequence[str]) -> dict[tuple[str, str], int]:
        """(state, value): the values the flow worked out (e.g. the fit result)."""
        f = facts.c
        query = (
            sa.select(f.state, f.value, sa.func.count())
            .where(*_within(period, "result"), f.state.in_(list(states)))
            .group_by(f.state, f.value)
        )
        return await self._counts(query)

    async def cross(self, period: Period, rows: str, columns: str) -> dict[tuple[str, str], int]:
        """(row answer, column answer) of the same runs; multi-select answers come joined
        (`a,b`) and are split by the caller."""
        r = facts.alias("r")
        c = facts.alias("c")
        query = (
            sa.select(r.c.value, c.c.value, sa.func.count())
            .select_from(
                r.join(
                    c,
                    sa.and_(
                        c.c.conversation_id == r.c.conversation_id,
                        c.c.run_at == r.c.run_at,
                        c.c.kind == "answer",
                        c.c.state == columns,
                    ),
                )
            )
            .where(*_within(period, "answer", table=r), r.c.state == rows)
            .group_by(r.c.value, c.c.value)
        )
        return await self._counts(query)

    async def typed(self, period: Period) -> dict[tuple[str, str, str], int]:
        """(question, kind, how): answers, multi-select picks and typed messages not
        understood, tapped or typed."""
        f = facts.c
        query = (
            sa.select(f.state, f.kind, f.how, sa.func.count())
            .where(*_within(period, "answer", "pick", "not_understood"))
            .group_by(f.state, f.kind, f.how)
        )
        return await self._counts(query)

    async def daily(self, period: Period, first_step: str) -> dict[tuple[date, str], int]:
        """(day, 'started' or 'agent_asked'): runs begun and agents asked for per day."""
        f = facts.c
        async with begin(self._engine) as connection:
            day = _day(connection, f.at, period.utc_offset)
            started = sa.select(day.label("day"), sa.literal("started").label("what")).where(
                *_within(period, "step"), f.value == first_step
            )
            asked = sa.select(day.label("day"), sa.literal("agent_asked").label("what")).where(
                *_within(period, "handoff_requested")
            )
            both = sa.union_all(started, asked).subquery()
            rows = await connection.execute(
                sa.select(both.c.day, both.c.what, sa.func.count()).group_by(
                    both.c.day, both.c.what
                )
            )
            return {(_as_date(d), what): int(n) for d, what, n in rows}

    async def outcomes(self, period: Period) -> dict[str, int]:
        """outcome tag: handoffs released with it ('' for none given)."""
        f = facts.c
        query = (
            sa.select(f.value, sa.func.count())
            .where(*_within(period, "handoff_released"))
            .group_by(f.value)
        )
        found: dict[str, int] = {}
        for key, n in (await self._counts(query)).items():
            found[key[0] or ""] = found.get(key[0] or "", 0) + n
        return found

    async def _counts(self, query: sa.Select[Any] | sa.Select[Any, int]) -> dict[Any, int]:
        async with begin(self._engine) as connection:
            rows = (await connection.execute(query)).all()
        return {tuple(row[:-1]): int(row[-1]) for row in rows}


def _within(period: Period, *kinds: str, table: Any = facts) -> list[sa.ColumnElement[bool]]:
    f = table.c
    where = [
        f.flow == period.flow,
        f.kind == kinds[0] if len(kinds) == 1 else f.kind.in_(kinds),
        f.run_at >= period.since,
        f.run_at < period.until,
    ]
    if period.channel:
        where.append(f.channel == period.channel)
    return where


def _day(connection: AsyncConnection, column: Any, offset: timedelta) -> sa.ColumnElement[Any]:
    """The local day of a stored UTC time (a fixed offset: Japan keeps no summer time)."""
    seconds = int(offset.total_seconds())
    if connection.dialect.name == "postgresql":
        local = sa.func.timezone("UTC", column) + sa.text(f"interval '{seconds} seconds'")
        return sa.cast(local, sa.Date)
    return sa.func.date(column, f"{seconds:+d} seconds")


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
