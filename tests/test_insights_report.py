"""The insights queries and report on SQLite and PostgreSQL, over seeded runs whose figures
are known (tests/insights_seed.py); and the statistics on their own."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

from insights_seed import runs, seed

from bot.flows.loader import load_flow
from bot.insights.report import build_report
from bot.insights.stats import Proportion, two_sided_p, wilson
from bot.store import SqlStore
from bot.store.facts import COUNT_DAYS
from bot.store.insights import InsightsStore, Period

ROOT = Path(__file__).resolve().parents[1]
CAREER = load_flow(ROOT / "flows" / "career.yaml").spec


async def report_of(store: SqlStore, *, channel: str | None = None, step: str | None = None):  # type: ignore[no-untyped-def]
    now = await seed(store.engine)
    today = now.astimezone(COUNT_DAYS).date()
    period = Period(flow="career", first=today - timedelta(days=29), last=today, channel=channel)
    return await build_report(InsightsStore(engine=store.engine), CAREER, period, compare_step=step)


async def test_funnel_dropoff_answers_and_ab_figures(store: SqlStore) -> None:
    report = await report_of(store)
    assert [(s.id, s.count) for s in report.funnel] == [
        ("started", 20),
        ("role", 19),
        ("frustrations", 18),
        ("fit", 15),
        ("advice", 14),
        ("summary", 11),
        ("agent_asked", 6),
        ("agent_talked", 4),
        ("booked", 0),
    ]
    funnel = report.table("funnel")
    assert funnel is not None
    assert funnel.rows[1] == ("職種", 19, "95.0%", "95.0%")
    assert funnel.rows[5] == ("まとめ", 11, "78.6%", "55.0%")

    dropoff = {
        row[0].rsplit("（", 1)[1].rstrip("）"): row[1:] for row in report.table("dropoff").rows
    }  # type: ignore[union-attr]
    assert dropoff["ask_role"][:2] == (1, "5.0%")
    assert dropoff["ask_frustrations"][0] == 1
    assert dropoff["fit_start"][0] == 3
    assert dropoff["ask_direction"][0] == 1
    assert dropoff["ways"][:2] == (3, "15.0%")
    assert dropoff["ask_role"][2] == 5.0  # the median of runs 1 … 19 at (index % 9) + 1 s
    assert dropoff["q_pillar"] == (0, "0.0%", 5.0)

    typed = {row[0].rsplit("（", 1)[1].rstrip("）"): row[1:] for row in report.table("typed").rows}  # type: ignore[union-attr]
    assert typed["ask_role"] == (16, 3, 5, "15.8%", "62.5%")
    assert typed["ask_frustrations"][:3] == (
        sum(len(r.frustrations.split(",")) for r in runs() if r.reach >= 2),
        0,
        0,
    )

    # role × frustrations, and the distributions, against the seed's own answers
    cross = report.table("cross")
    assert cross is not None and len(cross.headers) == 6
    expected: Counter[tuple[str, str]] = Counter()
    for run in runs():
        if run.reach >= 2:
            for f in run.frustrations.split(","):
                expected[(run.role, f)] += 1
    role_rows = {"経理": "keiri", "人事": "jinji", "総務": "soumu", "一般事務": "jimu"}
    columns = ["invisible", "repetitive", "revenue", "recognition", "growth"]
    for row in cross.rows:
        if row[0] in role_rows:
            assert list(row[1:]) == [expected[(role_rows[row[0]], c)] for c in columns], row
    assert expected[("keiri", "repetitive")] == 4  # by hand: runs 4, 8, 12, 16 (run 0 stopped)
    fits = Counter(r.fit for r in runs() if r.reach >= 3)
    fit_table = report.table("result_fit")
    assert fit_table is not None
    assert [(row[0], row[1]) for row in fit_table.rows] == [
        ("かなり良い", fits["good"]),
        ("中間", fits["mixed"]),
        ("ほかの道も合いそう", fits["low"]),
    ]
    direction = report.table("answers_ask_direction")
    assert direction is not None
    directions = Counter(r.direction for r in runs() if r.reach >= 4)
    assert [row[1] for row in direction.rows] == [
        directions[d] for d in ("stay", "change", "unsure")
    ]

    # the daily trend adds up; the outcomes agents gave
    assert sum(started for _, started, _ in report.daily) == 20
    assert sum(asked for _, _, asked in report.daily) == 6
    outcomes = report.table("outcomes")
    assert outcomes is not None
    assert outcomes.rows[:4] == (
        ("面談予約済み", 2),
        ("情報提供のみ", 1),
        ("見送り", 0),
        ("要フォロー", 1),
    )

    # A/B on the deepest step of the flow itself: summary, 3/10 against 8/10
    ab = report.comparison
    assert ab is not None and ab.step == "summary"
    a, b = ab.variants
    assert (a.variant, a.started, a.reached, b.variant, b.started, b.reached) == (
        "a",
        10,
        3,
        "b",
        10,
        8,
    )
    assert (round(a.low, 4), round(a.high, 4)) == (0.1078, 0.6032)
    assert (round(b.low, 4), round(b.high, 4)) == (0.4902, 0.9433)
    assert b.significant and b.p_value is not None and round(b.p_value, 4) == 0.0246
    assert ab.verdict.startswith("有意な差があります")


async def test_a_difference_not_yet_significant_is_said_so(store: SqlStore) -> None:
    report = await report_of(store, step="role")  # 9/10 against 10/10
    ab = report.comparison
    assert ab is not None and ab.step == "role"
    assert [(v.reached, v.started) for v in ab.variants] == [(9, 10), (10, 10)]
    assert not ab.variants[1].significant
    assert ab.verdict.startswith("差はまだ有意ではありません")


async def test_one_channel(store: SqlStore) -> None:
    report = await report_of(store, channel="line")  # runs 3, 7, 11, 15, 19
    assert report.funnel[0].count == 5
    assert report.funnel[5].count == sum(1 for r in runs() if r.index % 4 == 3 and r.reach >= 5)


def test_wilson_and_the_two_proportion_test() -> None:
    assert wilson(0, 0) == (0.0, 0.0)
    low, high = wilson(50, 100)
    assert round(low, 4) == 0.4038 and round(high, 4) == 0.5962
    assert two_sided_p(Proportion(50, 100), Proportion(50, 100)) == 1.0
    assert two_sided_p(Proportion(1, 0), Proportion(1, 1)) is None
