"""The insights report of one flow over a period: funnel, drop-off, answers, typed vs tapped,
daily trend, outcomes and the A/B comparison, as plain tables (shown, charted and sent as CSV)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

from bot.flows.schema import FlowSpec, FunnelStepSpec, QuestionSpec
from bot.insights.stats import Proportion, two_sided_p
from bot.records import HandoffOutcome, event_step
from bot.store.insights import InsightsStore, Period

SIGNIFICANCE: Final = 0.05
NO_OUTCOME: Final = "（未入力）"
"""Handoffs released without an outcome tag."""
AGENT_EVENT: Final = "handoff_requested"
"""The daily trend's second line: agents asked for."""


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table: what the page shows and what its CSV holds."""

    name: str  # the CSV's file name (without .csv)
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str | int | float, ...], ...]


@dataclass(frozen=True, slots=True)
class StepCount:
    id: str
    label: str
    count: int
    from_previous: float | None  # conversion from the step before
    from_start: float | None


@dataclass(frozen=True, slots=True)
class VariantRate:
    variant: str
    started: int
    reached: int
    rate: float
    low: float
    high: float
    p_value: float | None  # against the first variant (None for it)
    significant: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    step: str
    step_label: str
    variants: tuple[VariantRate, ...]
    verdict: str  # in words, for the page


@dataclass
class Report:
    period: Period
    funnel: list[StepCount]
    daily: list[tuple[date, int, int]]  # day, runs begun, agents asked for
    comparison: Comparison | None
    tables: list[Table] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


async def build_report(
    store: InsightsStore, spec: FlowSpec, period: Period, *, compare_step: str | None = None
) -> Report:
    insights = spec.insights
    if insights is None:
        return Report(period=period, funnel=[], daily=[], comparison=None)
    by_variant = _by_variant(insights.funnel, await store.steps(period))
    totals: dict[str, int] = {}
    for (step, _), n in by_variant.items():
        totals[step] = totals.get(step, 0) + n
    funnel = _funnel(insights.funnel, totals)
    first = insights.funnel[0].id
    report = Report(
        period=period,
        funnel=funnel,
        daily=_daily(period, first, await store.daily(period, first, event_step(AGENT_EVENT))),
        comparison=_compare(insights.funnel, by_variant, compare_step),
    )
    report.tables.append(
        Table(
            name="funnel",
            title="ファネル",
            headers=("段階", "件数", "前の段階から", "開始から"),
            rows=tuple(
                (s.label, s.count, _pct(s.from_previous), _pct(s.from_start)) for s in funnel
            ),
        )
    )
    questions = _questions(spec)
    started = totals.get(first, 0)
    abandoned = await store.abandoned(period)
    medians = await store.median_seconds(period)
    report.tables.append(
        Table(
            name="dropoff",
            title="質問ごとの離脱と回答までの時間",
            headers=("質問", "離脱した人", "開始に対する割合", "回答までの時間（中央値・秒）"),
            rows=tuple(
                (
                    label,
                    abandoned.get(name, 0),
                    _pct(abandoned.get(name, 0) / started if started else None),
                    round(medians[name], 1) if name in medians else "",
                )
                for name, (label, _) in questions.items()
            ),
        )
    )
    if insights.cross is not None:
        report.tables.append(await _cross(store, spec, period, *insights.cross))
    if insights.distributions:
        answered = await store.answers(period, insights.distributions)
        for name in insights.distributions:
            label, ask = questions[name]
            counts = {v: n for (s, v), n in answered.items() if s == name}
            report.tables.append(
                _distribution(f"answers_{name}", label, _choice_labels(ask), counts)
            )
    if insights.results:
        found = await store.results(period, [r.state for r in insights.results])
        for result in insights.results:
            counts = {v: n for (s, v), n in found.items() if s == result.state}
            report.tables.append(
                _distribution(f"result_{result.id}", result.label, result.labels, counts)
            )
    report.tables.append(_typed(questions, await store.typed(period)))
    report.tables.append(
        Table(
            name="daily",
            title="日ごとの開始と担当者希望",
            headers=("日付", "開始", "担当者希望"),
            rows=tuple((day.isoformat(), s, a) for day, s, a in report.daily),
        )
    )
    outcomes = await store.outcomes(period)
    report.tables.append(
        Table(
            name="outcomes",
            title="担当者の対応結果",
            headers=("結果", "件数"),
            rows=tuple(
                [(o.label, outcomes.get(o.value, 0)) for o in HandoffOutcome]
                + [(NO_OUTCOME, outcomes.get("", 0))]
            ),
        )
    )
    if report.comparison is not None:
        c = report.comparison
        report.tables.append(
            Table(
                name="ab",
                title=f"A/Bテスト: 開始 → {c.step_label}",
                headers=(
                    "バリアント",
                    "開始",
                    "到達",
                    "到達率",
                    "95%区間（下）",
                    "95%区間（上）",
                    "p値",
                ),
                rows=tuple(
                    (
                        v.variant or "（なし）",
                        v.started,
                        v.reached,
                        _pct(v.rate),
                        _pct(v.low),
                        _pct(v.high),
                        "" if v.p_value is None else round(v.p_value, 4),
                    )
                    for v in c.variants
                ),
            )
        )
    return report


# ---------------------------------------------------------------- private


def _by_variant(
    funnel: tuple[FunnelStepSpec, ...], steps: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """(step id, variant): runs that reached the step."""
    counts: dict[tuple[str, str], int] = {}
    for step in funnel:
        wanted = event_step(step.event) if step.event else step.id
        for (name, variant), n in steps.items():
            if name == wanted:
                counts[(step.id, variant)] = counts.get((step.id, variant), 0) + n
    return counts


def _funnel(funnel: tuple[FunnelStepSpec, ...], totals: dict[str, int]) -> list[StepCount]:
    rows: list[StepCount] = []
    start = totals.get(funnel[0].id, 0)
    previous: int | None = None
    for step in funnel:
        n = totals.get(step.id, 0)
        rows.append(
            StepCount(
                id=step.id,
                label=step.label,
                count=n,
                from_previous=None if previous is None else (n / previous if previous else 0.0),
                from_start=n / start if start else None,
            )
        )
        previous = n
    return rows


def _compare(
    funnel: tuple[FunnelStepSpec, ...],
    by_variant: dict[tuple[str, str], int],
    step_id: str | None,
) -> Comparison | None:
    variants = sorted({v for (_, v) in by_variant})
    if len(variants) < 2:
        return None
    step = (
        next((s for s in funnel if s.id == step_id), None) or funnel[-1 if len(funnel) < 2 else 1]
    )
    if step_id is None:
        # By default the deepest step of the flow itself (before agents): where wording shows.
        own = [s for s in funnel[1:] if not s.event]
        step = own[-1] if own else funnel[-1]
    first = funnel[0].id
    rates: list[VariantRate] = []
    base: Proportion | None = None
    for variant in variants:
        p = Proportion(by_variant.get((step.id, variant), 0), by_variant.get((first, variant), 0))
        low, high = p.interval
        p_value = None if base is None else two_sided_p(base, p)
        rates.append(
            VariantRate(
                variant=variant,
                started=p.total,
                reached=p.hits,
                rate=p.rate,
                low=low,
                high=high,
                p_value=p_value,
                significant=p_value is not None and p_value < SIGNIFICANCE,
            )
        )
        if base is None:
            base = p
    others = rates[1:]
    if any(r.significant for r in others):
        best = max(rates, key=lambda r: r.rate)
        verdict = f"有意な差があります（95%）: 「{best.variant}」の到達率が最も高いです。"
    else:
        verdict = "差はまだ有意ではありません（95%）。もう少しデータを集めてください。"
    return Comparison(step=step.id, step_label=step.label, variants=tuple(rates), verdict=verdict)


def _daily(
    period: Period, first_step: str, counts: dict[tuple[date, str], int]
) -> list[tuple[date, int, int]]:
    asked = event_step(AGENT_EVENT)
    days: list[tuple[date, int, int]] = []
    day = period.first
    while day <= period.last and len(days) < 400:
        days.append((day, counts.get((day, first_step), 0), counts.get((day, asked), 0)))
        day += timedelta(days=1)
    return days


_TEMPLATE = re.compile(r"\{[{%].*?[}%]\}")


def _questions(spec: FlowSpec) -> dict[str, tuple[str, QuestionSpec]]:
    """Every question of the flow in file order: its name, a short label, its spec."""
    found: dict[str, tuple[str, QuestionSpec]] = {}
    for name, state in spec.states.items():
        if state.ask is not None:
            text = _TEMPLATE.sub("", state.ask.text).strip()
            short = text if len(text) <= 24 else text[:23] + "…"
            found[name] = (f"{short}（{name}）", state.ask)
    return found


def _choice_labels(ask: QuestionSpec) -> dict[str, str]:
    return {c.id: c.label for c in ask.choices}


def _distribution(name: str, title: str, labels: dict[str, str], counts: dict[str, int]) -> Table:
    total = sum(counts.values())
    order = [*labels, *sorted(v for v in counts if v not in labels)]
    return Table(
        name=name,
        title=title,
        headers=("回答", "件数", "割合"),
        rows=tuple(
            (labels.get(v, v), counts.get(v, 0), _pct(counts.get(v, 0) / total if total else None))
            for v in order
        ),
    )


async def _cross(
    store: InsightsStore, spec: FlowSpec, period: Period, rows: str, columns: str
) -> Table:
    questions = _questions(spec)
    row_labels = _choice_labels(questions[rows][1])
    column_labels = _choice_labels(questions[columns][1])
    counts: dict[tuple[str, str], int] = {}
    for (r, joined), n in (await store.cross(period, rows)).items():
        for c in (joined or "").split(","):
            if c:
                counts[(r, c)] = counts.get((r, c), 0) + n
    return Table(
        name="cross",
        title=f"{questions[rows][0]} × {questions[columns][0]}",
        headers=("", *column_labels.values()),
        rows=tuple(
            (label, *(counts.get((r, c), 0) for c in column_labels))
            for r, label in row_labels.items()
        ),
    )


def _typed(
    questions: dict[str, tuple[str, QuestionSpec]], counts: dict[tuple[str, str, str], int]
) -> Table:
    rows = []
    for name, (label, ask) in questions.items():
        kind = "pick" if ask.multi else "answer"
        tapped = counts.get((name, kind, "tapped"), 0)
        typed = counts.get((name, kind, "typed"), 0)
        missed = counts.get((name, "not_understood", "typed"), 0)
        if not (tapped or typed or missed):
            continue
        rows.append(
            (
                label,
                tapped,
                typed,
                missed,
                _pct(typed / (tapped + typed) if tapped + typed else None),
                _pct(missed / (typed + missed) if typed + missed else None),
            )
        )
    return Table(
        name="typed",
        title="タップと入力、理解できなかった入力",
        headers=("質問", "タップ", "入力", "理解できず", "入力の割合", "理解できなかった割合"),
        rows=tuple(rows),
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"
