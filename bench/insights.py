"""How fast /console/insights answers over 1,000,000 conversations on PostgreSQL.

    .venv/bin/python bench/insights.py [--conversations N] [--days 30]

Creates a fresh database on the server of TEST_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test), migrates it, seeds N conversations (a year of
runs, oldest first, as they would arrive) with the facts the bot writes for them (about 30
each: states entered, answers, picks, steps, the fit result, handoffs, endings and
abandonments) by generate_series, builds the schema's own indexes, then times each query of
the insights page for the last `--days` days (median of 5 warm runs) against the goal of
300 ms. The page reads the daily counts the store keeps with every fact (`fact_counts`); the
seed sums them from the facts in one statement. The database is dropped at the end. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex

from bot.store import SqlStore, create_engine
from bot.store.facts import COUNT_DAYS
from bot.store.insights import InsightsStore, Period
from bot.store.schema import facts

SERVER: Final = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
GOAL_MS: Final = 300.0
YEAR: Final = 365

FIT: Final = [
    "fit_start", "q_support", "q_change", "q_steady", "q_ideas", "q_rules", "q_thanks", "q_pillar",
]  # fmt: skip
# (order, kind, state, value, the run must have reached at least, only at exactly this reach)
# value: a literal, or 'role' 'frust' 'pick1' 'pick2' 'fit' 'dir' 'yn' worked out per run.
TEMPLATE: Final = [
    (1, "entered", "greeting", None, 0, None),
    (2, "step", None, "started", 0, None),
    (3, "entered", "ask_role", None, 0, None),
    (4, "not_understood", "ask_role", None, 0, None),  # only some runs, see NOT_UNDERSTOOD
    (5, "answer", "ask_role", "role", 1, None),
    (6, "step", None, "role", 1, None),
    (7, "entered", "ask_frustrations", None, 1, None),
    (8, "pick", "ask_frustrations", "pick1", 2, None),
    (9, "pick", "ask_frustrations", "pick2", 2, None),
    (10, "answer", "ask_frustrations", "frust", 2, None),
    (11, "step", None, "frustrations", 2, None),
    (11, "cross", "ask_role", "cross", 2, None),
    (12, "entered", "frust_reasons", None, 2, None),
    (13, "entered", "fit_start", None, 2, None),
    *[
        row
        for i, (question, following) in enumerate(itertools.pairwise(FIT))
        for row in (
            (14 + 2 * i, "answer", question, "yn", 3, None),
            (15 + 2 * i, "entered", following, None, 3, None),
        )
    ],
    (28, "answer", "q_pillar", "yn", 3, None),
    (29, "entered", "fit_result", None, 3, None),
    (30, "result", "fit_result", "fit", 3, None),
    (31, "step", None, "fit", 3, None),
    (32, "entered", "ask_direction", None, 3, None),
    (33, "answer", "ask_direction", "dir", 4, None),
    (34, "entered", "direction_route", None, 4, None),
    (35, "entered", "ways", None, 4, None),
    (36, "step", None, "advice", 4, None),
    (37, "entered", "summary", None, 5, None),
    (38, "step", None, "summary", 5, None),
    (39, "handoff_requested", "handoff", None, 5, None),  # only runs that asked (1 in 11)
    (39, "step", None, "@handoff_requested", 5, None),
    (40, "handoff_claimed", "handoff", None, 5, None),  # only runs that talked (1 in 22)
    (40, "step", None, "@handoff_claimed", 5, None),
    (41, "handoff_released", "after_agent", "outcome", 5, None),
    (42, "ended", "goodbye", None, 5, None),
    (43, "abandoned", "ask_role", None, 0, 0),
    (44, "abandoned", "ask_frustrations", None, 0, 1),
    (45, "abandoned", "fit_start", None, 0, 2),
    (46, "abandoned", "ask_direction", None, 0, 3),
    (47, "abandoned", "ways", None, 0, 4),
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    name = f"yarigai_bench_insights_{uuid4().hex[:8]}"
    admin = create_engine(SERVER).execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        store = await SqlStore.open(url)
        try:
            now = datetime.now(UTC).replace(microsecond=0)
            await _seed(store, args.conversations, now)
            await _time_queries(store, now, args.days)
            await _time_queries(store, now, 365)
        finally:
            await store.close()
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


async def _seed(store: SqlStore, n: int, now: datetime) -> None:
    started = time.perf_counter()
    start = now - timedelta(days=YEAR)
    indexes = list(facts.indexes)
    async with store.engine.begin() as connection:
        await connection.exec_driver_sql("SET synchronous_commit = off")
        await connection.exec_driver_sql("SET maintenance_work_mem = '512MB'")
        # Indexes and the foreign key are built once after the rows, not kept up row by row.
        for index in indexes:
            await connection.exec_driver_sql(f'DROP INDEX "{index.name}"')
        await connection.exec_driver_sql(
            "ALTER TABLE facts DROP CONSTRAINT fk_facts_conversation_id_conversations"
        )
        await connection.execute(
            sa.text(
                """
                INSERT INTO conversations (id, channel, address, flow, flow_version, state, slots,
                    selection, misses, pending_confirm, status, mode, version, created_at,
                    updated_at, variant, run_at)
                SELECT g, CASE WHEN g % 4 = 3 THEN 'line' WHEN g % 4 = 2 THEN 'slack' ELSE 'web' END,
                    'bench-' || g, 'career', 'v1', 'summary', '{}', '[]', 0, '[]', 'active', 'bot',
                    1, t, t, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, t
                FROM (SELECT g, CAST(:start AS timestamptz)
                        + make_interval(secs => g * CAST(:span AS float8) / :n) AS t
                      FROM generate_series(1, :n) AS g) AS s
                """
            ),
            {"start": start, "span": YEAR * 86400.0, "n": n},
        )
        await connection.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('conversations', 'id'), (SELECT max(id) FROM conversations))"
        )
        print(f"seeded {n:,} conversations in {time.perf_counter() - started:.0f} s", flush=True)
        template = ", ".join(
            f"({order}, '{kind}', {_sql(state)}, {_sql(value)}, {least}, {'NULL' if exact is None else exact})"
            for order, kind, state, value, least, exact in TEMPLATE
        )
        await connection.exec_driver_sql(
            f"""
            INSERT INTO facts (conversation_id, run_at, at, kind, flow, flow_version, variant,
                channel, state, value, how, stage, seconds)
            SELECT c.id, c.run_at, c.run_at + t.ord * interval '20 seconds', t.kind, 'career',
                'v1', c.variant, c.channel, t.state,
                CASE t.value
                    WHEN 'role' THEN (ARRAY['keiri','jinji','soumu','jimu','other'])[c.id % 5 + 1]
                    WHEN 'pick1' THEN (ARRAY['invisible','repetitive','revenue','recognition','growth'])[c.id % 5 + 1]
                    WHEN 'pick2' THEN (ARRAY['invisible','repetitive','revenue','recognition','growth'])[(c.id / 5) % 5 + 1]
                    WHEN 'frust' THEN (ARRAY['invisible','repetitive','revenue','recognition','growth'])[c.id % 5 + 1]
                        || ',' || (ARRAY['invisible','repetitive','revenue','recognition','growth'])[(c.id / 5) % 5 + 1]
                    WHEN 'cross' THEN (ARRAY['keiri','jinji','soumu','jimu','other'])[c.id % 5 + 1]
                        || '|' || (ARRAY['invisible','repetitive','revenue','recognition','growth'])[c.id % 5 + 1]
                        || ',' || (ARRAY['invisible','repetitive','revenue','recognition','growth'])[(c.id / 5) % 5 + 1]
                    WHEN 'fit' THEN (ARRAY['good','mixed','low'])[c.id % 3 + 1]
                    WHEN 'dir' THEN (ARRAY['stay','change','unsure'])[(c.id / 3) % 3 + 1]
                    WHEN 'yn' THEN (ARRAY['yes','no'])[(c.id + t.ord) % 2 + 1]
                    WHEN 'outcome' THEN (ARRAY['面談予約済み','情報提供のみ','見送り','要フォロー'])[c.id % 4 + 1]
                    ELSE t.value END,
                CASE WHEN t.kind IN ('answer', 'pick') THEN
                        CASE WHEN (c.id + t.ord) % 7 = 0 THEN 'typed' ELSE 'tapped' END
                     WHEN t.kind = 'not_understood' THEN 'typed' END,
                CASE WHEN t.kind IN ('answer', 'pick', 'not_understood') AND (c.id + t.ord) % 7 = 0
                     THEN 'keyword' END,
                CASE WHEN t.kind = 'answer' THEN 3 + ((c.id * 31 + t.ord * 17) % 60) END
            FROM (SELECT id, run_at, variant, channel,
                    CASE WHEN r < 550 THEN 5 WHEN r < 700 THEN 4 WHEN r < 750 THEN 3
                         WHEN r < 900 THEN 2 WHEN r < 950 THEN 1 ELSE 0 END AS reach
                  FROM (SELECT *, ((id * 2654435761) % 1000)
                            * CASE variant WHEN 'b' THEN 0.95 ELSE 1 END AS r
                        FROM conversations) AS x) AS c
            JOIN (VALUES {template}) AS t(ord, kind, state, value, least, exact)
              ON c.reach >= t.least AND (t.exact IS NULL OR c.reach = t.exact)
            WHERE (t.kind <> 'not_understood' OR c.id % 9 = 0)
              AND (t.kind NOT LIKE 'handoff%' AND coalesce(t.value, '') NOT LIKE '@%'
                   OR c.id % 11 = 0)
              AND (t.kind NOT IN ('handoff_claimed', 'handoff_released')
                   AND coalesce(t.value, '') <> '@handoff_claimed' OR c.id % 22 = 0)
              AND (t.kind <> 'ended' OR c.id % 11 <> 0)
            ORDER BY c.id, t.ord
            """
        )
        rows = (await connection.exec_driver_sql("SELECT count(*) FROM facts")).scalar_one()
        print(f"seeded {rows:,} facts in {time.perf_counter() - started:.0f} s", flush=True)
        # The daily counts, as the store keeps them with each insert (bot/store/facts.py):
        # here summed in one statement from the facts seeded.
        await connection.exec_driver_sql(
            """
            INSERT INTO fact_counts (flow, day, kind, state, value, how, variant, channel,
                flow_version, n)
            SELECT flow, CAST(timezone('Asia/Tokyo', run_at) AS date), kind,
                coalesce(state, ''), coalesce(one, ''), coalesce(how, ''), variant, channel,
                flow_version, count(*)
            FROM (SELECT f.*, unnest(CASE WHEN kind = 'pick' THEN string_to_array(value, ',')
                                     ELSE ARRAY[value] END) AS one FROM facts f) AS x
            WHERE kind <> 'entered'
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
            """
        )
        await connection.exec_driver_sql(
            """
            INSERT INTO fact_counts (flow, day, kind, state, value, how, variant, channel,
                flow_version, n)
            SELECT flow, CAST(timezone('Asia/Tokyo', run_at) AS date), 'seconds', state,
                CAST(CASE WHEN seconds < 10 THEN floor(seconds)
                          WHEN seconds < 60 THEN floor(seconds / 5) * 5
                          WHEN seconds < 300 THEN floor(seconds / 30) * 30
                          WHEN seconds < 3600 THEN floor(seconds / 300) * 300
                          ELSE least(floor(seconds / 3600) * 3600, 86400) END AS integer),
                '', variant, channel, flow_version, count(*)
            FROM facts WHERE kind = 'answer' AND seconds IS NOT NULL
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
            """
        )
        counts = (await connection.exec_driver_sql("SELECT count(*) FROM fact_counts")).scalar_one()
        print(f"counted them in {counts:,} rows: {time.perf_counter() - started:.0f} s", flush=True)
        for index in indexes:
            await connection.execute(CreateIndex(index))
        await connection.exec_driver_sql(
            "ALTER TABLE facts ADD CONSTRAINT fk_facts_conversation_id_conversations FOREIGN KEY "
            "(conversation_id) REFERENCES conversations (id) ON DELETE CASCADE"
        )
    async with store.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql("VACUUM ANALYZE conversations")
        await connection.exec_driver_sql("VACUUM ANALYZE facts")
        await connection.exec_driver_sql("VACUUM ANALYZE fact_counts")
        size = (
            await connection.exec_driver_sql(
                "SELECT pg_size_pretty(pg_total_relation_size('facts'))"
            )
        ).scalar_one()
    print(f"indexes built, vacuumed: {time.perf_counter() - started:.0f} s; facts take {size}")


async def _time_queries(store: SqlStore, now: datetime, days: int) -> None:
    insights = InsightsStore(engine=store.engine)
    today = now.astimezone(COUNT_DAYS).date()
    period = Period(flow="career", first=today - timedelta(days=days - 1), last=today)
    queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("funnel (and A/B)", lambda: insights.steps(period)),
        ("drop-off per question", lambda: insights.abandoned(period)),
        ("median time per question", lambda: insights.median_seconds(period)),
        ("role × frustrations", lambda: insights.cross(period, "ask_role")),
        ("direction", lambda: insights.answers(period, ["ask_direction"])),
        ("fit result", lambda: insights.results(period, ["fit_result"])),
        ("typed vs tapped", lambda: insights.typed(period)),
        ("daily trend", lambda: insights.daily(period, "started", "@handoff_requested")),
        ("outcomes", lambda: insights.outcomes(period)),
    ]
    line = Period(flow="career", first=period.first, last=period.last, channel="line")
    queries.append(("funnel, LINE only", lambda: insights.steps(line)))
    runs = sum(n for (step, _), n in (await insights.steps(period)).items() if step == "started")
    print(
        f"\nlast {days} days: {runs:,} runs; median of 5 warm runs per query (goal < {GOAL_MS:.0f} ms)"
    )
    total = 0.0
    for label, query in queries:
        await query()  # warm
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await query()
            times.append((time.perf_counter() - started) * 1000)
        ms = statistics.median(times)
        total += ms
        verdict = "ok" if ms < GOAL_MS else "OVER"
        print(f"  {label:<32} {ms:8.1f} ms  {verdict}")
    print(f"  {'the whole page (sum)':<32} {total:8.1f} ms")


def _sql(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


if __name__ == "__main__":
    asyncio.run(main())
