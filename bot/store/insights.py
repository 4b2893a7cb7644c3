"""The queries behind /console/insights: sums of the daily fact counts (`fact_counts`) of one
flow over the runs begun in a period of Japanese days, optionally on one channel. The counts
are kept up with the facts, so each query reads a few rows a day whatever the traffic
(bench/insights.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.schema import fact_counts
from bot.store.tx import begin


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """The runs of one flow begun from `first` to `last` (Japanese days, both included), on
    one channel or all (None)."""

    flow: str
    first: date
    last: date
    channel: str | None = None


class InsightsStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def steps(self, period: Period) -> dict[tuple[str, str], int]:
        """(step value, variant): runs that reached each funnel step ('@kind' for events)."""
        c = fact_counts.c
        return await self._sum(period, "step", c.value, c.variant)

    async def abandoned(self, period: Period) -> dict[str, int]:
        """state: runs abandoned there (no message for ABANDON_AFTER_HOURS)."""
        c = fact_counts.c
        return _first(await self._sum(period, "abandoned", c.state))

    async def median_seconds(self, period: Period) -> dict[str, float]:
        """question: the median time from being asked to answered, from the counted seconds
        (to the second under 10 s, to 5 s under a minute, then coarser: see seconds_bucket)."""
        c = fact_counts.c
        histogram: dict[str, list[tuple[int, int]]] = {}
        for (state, bucket), n in (await self._sum(period, "seconds", c.state, c.value)).items():
            histogram.setdefault(state, []).append((int(bucket), n))
        return {state: _median(buckets) for state, buckets in histogram.items()}

    async def answers(self, period: Period, questions: Sequence[str]) -> dict[tuple[str, str], int]:
        """(question, answer value): how often each answer was given."""
        c = fact_counts.c
        return await self._sum(period, "answer", c.state, c.value, where=c.state.in_(questions))

    async def results(self, period: Period, states: Sequence[str]) -> dict[tuple[str, str], int]:
        """(state, value): the values the flow worked out (e.g. the fit result)."""
        c = fact_counts.c
        return await self._sum(period, "result", c.state, c.value, where=c.state.in_(states))

    async def cross(self, period: Period, rows: str) -> dict[tuple[str, str], int]:
        """(row answer, column answer) of the same runs; a multi-select's answer comes joined
        (`a,b`) and is split by the caller."""
        c = fact_counts.c
        found = await self._sum(period, "cross", c.value, where=c.state == rows)
        pairs: dict[tuple[str, str], int] = {}
        for (value,), n in found.items():
            row, _, column = value.partition("|")
            pairs[(row, column)] = pairs.get((row, column), 0) + n
        return pairs

    async def typed(self, period: Period) -> dict[tuple[str, str, str], int]:
        """(question, kind, how): answers, multi-select picks and typed messages not
        understood, tapped or typed."""
        c = fact_counts.c
        return await self._sum(period, ("answer", "pick", "not_understood"), c.state, c.kind, c.how)

    async def daily(
        self, period: Period, first_step: str, asked: str
    ) -> dict[tuple[date, str], int]:
        """(day, step value): runs begun (`first_step`) and agents asked for (`asked`) by day."""
        c = fact_counts.c
        found = await self._sum(
            period, "step", c.day, c.value, where=c.value.in_((first_step, asked))
        )
        return {(_as_date(day), value): n for (day, value), n in found.items()}

    async def outcomes(self, period: Period) -> dict[str, int]:
        """outcome: handoffs released with it ('' for none given)."""
        c = fact_counts.c
        return _first(await self._sum(period, "handoff_released", c.value))

    async def _sum(
        self,
        period: Period,
        kinds: str | tuple[str, ...],
        *columns: Any,
        where: sa.ColumnElement[bool] | None = None,
    ) -> dict[tuple[Any, ...], int]:
        c = fact_counts.c
        conditions = [
            c.flow == period.flow,
            c.kind == kinds if isinstance(kinds, str) else c.kind.in_(kinds),
            c.day >= period.first,
            c.day <= period.last,
        ]
        if period.channel:
            conditions.append(c.channel == period.channel)
        if where is not None:
            conditions.append(where)
        query = sa.select(*columns, sa.func.sum(c.n)).where(*conditions).group_by(*columns)
        async with begin(self._engine, scanning=True) as connection:
            rows = (await connection.execute(query)).all()
        return {tuple(row[:-1]): int(row[-1]) for row in rows}


def _first(found: dict[tuple[Any, ...], int]) -> dict[str, int]:
    return {key[0]: n for key, n in found.items()}


def _median(buckets: list[tuple[int, int]]) -> float:
    """The median of a histogram of (bucket, count): the bucket holding the middle answer
    (the mean of the two middle buckets for an even count)."""
    ordered = sorted(buckets)
    total = sum(n for _, n in ordered)

    def nth(index: int) -> int:
        seen = 0
        for bucket, n in ordered:
            seen += n
            if index < seen:
                return bucket
        return ordered[-1][0]

    if total % 2:
        return float(nth(total // 2))
    return (nth(total // 2 - 1) + nth(total // 2)) / 2


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
