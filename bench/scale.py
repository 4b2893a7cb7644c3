"""Scale-out benchmark: the speed goals of running on one host and on several, each printed with
its figure, the bare endpoint's in the same run, and whether it is met.

    .venv/bin/python bench/scale.py [--quick] [--only acks,burst,curve,open,idle,engine,size]

Runs on 127.0.0.1: the fake LINE API, a bare FastAPI endpoint that checks the signature and
parses the JSON (the floor every figure is compared with), and the bot:
- `default`: `yarigai serve` with the settings a user gets (nothing set but the LINE channel),
  on SQLite;
- `fleet N`: `yarigai serve --no-worker` and N `yarigai worker` processes on one PostgreSQL
  database (TEST_DATABASE_URL's server; a database created here and dropped after).

Phases (all by default):
- acks: closed-loop burst, bare endpoint then bot: acknowledgements/s (goal: >= 0.8x bare);
- burst: 2,000 messages/s for 8 s from 5,000 users, open loop, answered end to end per second
  (goal: >= 0.3x bare acks/s, default settings);
- curve: the same burst on PostgreSQL with 1, 2 and 4 workers;
- open: open loop, each message from a new user (a conversation created): 50/s (goal: reply
  p50 <= 30 ms, p99 <= 100 ms, event in -> reply request at the LINE API) and 0.1x bare acks/s
  for 30 s (goal: every message answered, p99 <= 1 s, no growing backlog); and, without a
  goal, at each of --open-rates (default 250/s: 0.1x the bare endpoint the goals were set with);
- idle: CPU of an idle worker on PostgreSQL over 10 s (goal: < 0.5 % of a core);
- engine: `Engine.advance` alone over the whole career conversation (goal: >= 10,000 steps/s);
- size: CPU per message with 1,000 and with 1,000,000 stored conversations on PostgreSQL
  (goal: within +-15 %; each measured twice, the means compared).
Asserts nothing; prints. Sizes shrink with --quick (the goals stay the same).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from harness import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    REPO,
    Replies,
    Run,
    burst,
    children,
    cpu_seconds,
    free_port,
    latencies,
    newcomers,
    paced,
    percentile,
    process,
    users,
    walk,
)
from sqlalchemy.engine import make_url

from bot.store import create_engine

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Sizes:
    acks: int = 6000
    burst_rate: float = 2000.0
    burst_seconds: float = 8.0
    burst_users: int = 5000
    slow_rate_seconds: float = 30.0
    calm_seconds: float = 10.0
    engine_loops: int = 300
    stored: int = 1_000_000


QUICK = Sizes(
    acks=2000,
    burst_rate=1000.0,
    burst_seconds=4.0,
    burst_users=1000,
    slow_rate_seconds=10.0,
    calm_seconds=5.0,
    engine_loops=60,
    stored=100_000,
)
PHASES = ("acks", "burst", "curve", "open", "idle", "engine", "size")


@dataclass
class Verdicts:
    """Each goal with its figure; printed again at the end."""

    lines: list[str] = field(default_factory=list)

    def goal(self, name: str, figure: str, met: bool | None) -> None:
        mark = {True: "met", False: "NOT met", None: "-"}[met]
        line = f"  [{mark:^7}] {name}: {figure}"
        self.lines.append(line)
        print(line, flush=True)


# ------------------------------------------------------------------ the processes


@dataclass
class Bot:
    """A bot under test: where its webhooks go, and the pids whose CPU is its cost."""

    url: str
    pids: Callable[[], list[int]]
    workers: list[int]


class Lab:
    """The fake LINE API and the bare endpoint, for the whole run; bots started on demand."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self.workdir = workdir
        self.stack = stack
        fake_port, bare_port = free_port(), free_port()
        self.fake = f"http://127.0.0.1:{fake_port}"
        self.bare = f"http://127.0.0.1:{bare_port}/webhooks/line"
        self.base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "DATABASE"))},
            "FLOWS_DIR": str(REPO / "flows"),
            "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
            "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
            "LINE_API_BASE_URL": self.fake,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
            "SESSION_SECRET": "bench",
        }
        fake_cmd = [sys.executable, str(REPO / "tests" / "fakes" / "line_api.py")]
        fake_cmd += ["--port", str(fake_port), "--validate-every", "20"]
        uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]
        bare_cmd = [*uvicorn, "--log-level", "warning", "--port", str(bare_port)]
        bare_cmd += ["--app-dir", str(REPO / "bench"), "harness:bare_app"]
        stack.enter_context(process(fake_cmd, self.base_env, workdir, f"{self.fake}/_fake/stats"))
        stack.enter_context(process(bare_cmd, self.base_env, workdir, self.bare))

    @contextmanager
    def default(self) -> Iterator[Bot]:
        """`yarigai serve` as a user gets it: SQLite, every other setting at its default."""
        port = free_port()
        env = {**self.base_env, "DATABASE_URL": f"sqlite:///{self.workdir / uuid.uuid4().hex}.db"}
        command = [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)]
        with process(command, env, self.workdir, f"http://127.0.0.1:{port}/healthz", 120) as bot:
            time.sleep(3.0)  # its workers (if the mode has any) load the NLU after /healthz

            def pids() -> list[int]:
                return [bot.pid, *children(bot.pid)]

            yield Bot(f"http://127.0.0.1:{port}/webhooks/line", pids, children(bot.pid))

    @contextmanager
    def fleet(self, database: str, workers: int) -> Iterator[Bot]:
        """One web process and `workers` workers on PostgreSQL (what several hosts would run)."""
        port = free_port()
        env = {**self.base_env, "DATABASE_URL": database, "WORKER_MODE": "separate"}
        web = [sys.executable, "-m", "bot.cli", "serve", "--port", str(port), "--no-worker"]
        with ExitStack() as stack:
            server = stack.enter_context(
                process(web, env, self.workdir, f"http://127.0.0.1:{port}/healthz", 120)
            )
            worker = [sys.executable, "-m", "bot.cli", "worker", "--nice", "0"]
            started = [
                stack.enter_context(process(worker, env, self.workdir, None))
                for _ in range(workers)
            ]
            pids = [server.pid, *(w.pid for w in started)]
            yield Bot(f"http://127.0.0.1:{port}/webhooks/line", lambda: pids, pids[1:])


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    name = f"yarigai_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as db:
            await db.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as db:
            await db.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


async def postgres_answers() -> str | None:
    engine = create_engine(POSTGRES_URL)
    try:
        async with engine.connect() as db:
            await db.execute(sa.text("SELECT 1"))
        return None
    except Exception as error:  # any reason it cannot be used is printed, and skipped
        return str(error).splitlines()[0]
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ the phases


class Bench:
    def __init__(
        self,
        lab: Lab,
        http: aiohttp.ClientSession,
        sizes: Sizes,
        open_rates: tuple[float, ...] = (),
    ) -> None:
        self.lab = lab
        self.http = http
        self.sizes = sizes
        self.replies = Replies(http, lab.fake)
        self.verdicts = Verdicts()
        self.bare_rate = 0.0
        self.open_rates = open_rates  # open-loop rates run without a goal

    async def warm(self, bot: Bot) -> None:
        """First requests (imports, connections, NLU) before anything is measured."""
        await self.replies.until(0, 0)
        before = self.replies.answered
        await burst(self.http, bot.url, walk(users(20), 60), connections=8, patience=60)
        await self.replies.until(before + 60, 120)

    async def acks(self) -> None:
        count = self.sizes.acks
        bare = await burst(self.http, self.lab.bare, walk(users(400), count), **self._closed())
        self.bare_rate = bare.rate
        print(f"bare endpoint: {bare.rate:,.0f} acks/s (signature checked, JSON parsed)")
        with self.lab.default() as bot:
            await self.warm(bot)
            loaded = await burst(self.http, bot.url, walk(users(400), count), **self._closed())
            await self.replies.until(self.replies.answered + loaded.ok, 300)
        ratio = loaded.rate / bare.rate
        self.verdicts.goal(
            "acks, default settings",
            f"{loaded.rate:,.0f}/s = {ratio:.2f}x bare (goal >= 0.8x)",
            ratio >= 0.8,
        )

    async def burst_default(self) -> None:
        with self.lab.default() as bot:
            await self.warm(bot)
            rate, answered = await self._burst(bot)
        ratio = answered / self.bare_rate
        self.verdicts.goal(
            "burst answered end to end, default settings (SQLite)",
            f"{answered:,.0f} messages/s at {rate:,.0f}/s sent = {ratio:.2f}x bare (goal >= 0.3x)",
            ratio >= 0.3,
        )

    async def curve(self) -> None:
        for workers in (1, 2, 4):
            async with postgres_database() as database:
                with self.lab.fleet(database, workers) as bot:
                    await self.warm(bot)
                    rate, answered = await self._burst(bot)
            self.verdicts.goal(
                f"burst answered end to end, PostgreSQL, 1 web + {workers} worker(s)",
                f"{answered:,.0f} messages/s at {rate:,.0f}/s sent = "
                f"{answered / self.bare_rate:.2f}x bare",
                None,
            )

    async def open_loop(self) -> None:
        with self.lab.default() as bot:
            await self.warm(bot)
            calm = await self._open(bot, 50.0, self.sizes.calm_seconds)
            p50, p99 = percentile(calm.latencies, 50), percentile(calm.latencies, 99)
            self.verdicts.goal(
                "open loop 50 new users/s",
                f"reply p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"{calm.answered}/{calm.sent} answered (goal p50 <= 30 ms, p99 <= 100 ms)",
                p50 <= 0.030 and p99 <= 0.100 and calm.answered == calm.sent,
            )
            rate = 0.1 * self.bare_rate
            busy = await self._open(bot, rate, self.sizes.slow_rate_seconds)
            for extra in self.open_rates:  # where the bot keeps up, for capacity planning
                at = await self._open(bot, extra, self.sizes.slow_rate_seconds)
                self.verdicts.goal(
                    f"open loop {extra:,.0f} new users/s for {self.sizes.slow_rate_seconds:.0f} s",
                    at.described(extra),
                    None,
                )
        self.verdicts.goal(
            f"open loop 0.1x bare = {rate:,.0f} new users/s for {self.sizes.slow_rate_seconds:.0f} s",
            f"{busy.described(rate)} (goal: all, p99 <= 1 s, steady)",
            busy.answered == busy.sent
            and percentile(busy.latencies, 99) <= 1.0
            and not busy.growing(rate),
        )

    async def idle(self) -> None:
        async with postgres_database() as database:
            with self.lab.fleet(database, 1) as bot:
                await self.warm(bot)
                await asyncio.sleep(3.0)
                before = cpu_seconds(bot.workers)
                await asyncio.sleep(10.0)
                used = (cpu_seconds(bot.workers) - before) / 10.0
        self.verdicts.goal(
            "idle worker (PostgreSQL, LISTEN/NOTIFY)",
            f"{used * 100:.2f} % of a core (goal < 0.5 %)",
            used < 0.005,
        )

    def engine(self) -> None:
        sys.path.insert(0, str(REPO / "bench"))
        import engine as engine_bench

        from bot.engine import Engine
        from bot.flows.loader import load_flows

        flow_engine = Engine(load_flows(REPO / "flows")["career"])
        recorded = engine_bench.record(flow_engine)
        stats = engine_bench.bench_engine(flow_engine, recorded, self.sizes.engine_loops)
        rate = 1.0 / stats.mean
        self.verdicts.goal("engine alone", f"{rate:,.0f} steps/s (goal >= 10,000)", rate >= 10_000)

    async def size(self) -> None:
        # Each size measured twice, in turns (small, big, small, big): one run's CPU time
        # varies by a tenth or more on a shared machine, as much as the goal allows.
        costs: dict[int, list[float]] = {1_000: [], self.sizes.stored: []}
        for _ in range(2):
            for stored in costs:
                async with postgres_database() as database:
                    with self.lab.fleet(database, 2) as bot:
                        await self.warm(bot)
                        started = time.monotonic()
                        await seed(database, stored)
                        seeded = time.monotonic() - started
                        # What a process does once after starting (its jobs' first rounds,
                        # tables built at first use) must not land in one size's figure only:
                        # the big size's seeding gave it seconds to finish, the small's none.
                        await quiet(bot.pids())
                        before = cpu_seconds(bot.pids())
                        messages = walk(users(500), 3000)
                        sent = await burst(self.http, bot.url, messages, **self._closed())
                        await self.replies.until(self.replies.answered + sent.ok, 300)
                        cost = (cpu_seconds(bot.pids()) - before) / sent.ok
                costs[stored].append(cost)
                print(
                    f"  {stored:,} conversations stored (in {seeded:.0f} s): "
                    f"{cost * 1000:.2f} ms of CPU per message"
                )
        small, big = (sum(c) / len(c) for c in costs.values())
        change = big / small - 1
        self.verdicts.goal(
            f"CPU per message, 1,000 vs {self.sizes.stored:,} conversations (PostgreSQL)",
            f"{small * 1000:.2f} ms vs {big * 1000:.2f} ms = {change:+.0%} (goal within +-15 %)",
            abs(change) <= 0.15,
        )

    # -------------------------------------------------------------- helpers

    def _closed(self) -> dict[str, Any]:
        return {"connections": 32, "patience": 120.0}

    async def _burst(self, bot: Bot) -> tuple[float, float]:
        """(rate sent, answered end to end per second) for the open-loop burst."""
        sizes = self.sizes
        count = int(sizes.burst_rate * sizes.burst_seconds)
        requests = list(walk(users(sizes.burst_users), count))
        sent = await paced(self.http, bot.url, requests, sizes.burst_rate)
        await self.replies.until(self.replies.answered + sent.ok, 600)
        replied = self.replies.since(sent.started)
        pushed = self.replies.pushed_since(sent.started)
        last = max([r[2] for r in replied] + [p[1] for p in pushed])
        if pushed:
            print(f"  {len(pushed)} answers went by push (their reply tokens went stale waiting)")
        return sent.rate, (len(replied) + len(pushed)) / (last - sent.started)

    async def _open(self, bot: Bot, rate: float, seconds: float) -> OpenLoop:
        requests = list(newcomers(int(rate * seconds)))
        sent = await paced(self.http, bot.url, requests, rate)
        await self.replies.until(self.replies.answered + sent.ok, 120)
        return OpenLoop.of(sent, self.replies.since(sent.started))


async def quiet(pids: list[int], *, within: float = 30.0) -> None:
    """Until the processes use less than 2 % of a core for half a second (or `within` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        await asyncio.sleep(0.5)
        if cpu_seconds(pids) - before < 0.01:
            return


@dataclass
class OpenLoop:
    sent: int
    answered: int
    latencies: list[float]
    backlog_mid: int  # messages sent and not yet answered halfway through the sending
    backlog_end: int  # ... and when the last one was sent

    @classmethod
    def of(cls, run: Run, replies: list[list[Any]]) -> OpenLoop:
        sent_at = sorted(r[1] for r in replies)
        answered_at = sorted(r[2] for r in replies)

        def backlog(moment: float) -> int:
            return bisect.bisect_right(sent_at, moment) - bisect.bisect_right(answered_at, moment)

        first, last = (sent_at[0], sent_at[-1]) if sent_at else (0.0, 0.0)
        return cls(
            sent=run.sent,
            answered=len(replies),
            latencies=latencies(replies),
            backlog_mid=backlog((first + last) / 2),
            backlog_end=backlog(last),
        )

    def growing(self, rate: float) -> bool:
        """The backlog grew over the second half of the sending by more than half a second of
        messages. (Comparing the latencies of early and late messages misses it when the bot
        answers hardly anything until the sending stops: then they all wait about as long.)"""
        return self.backlog_end - self.backlog_mid > max(rate * 0.5, 1)

    def described(self, rate: float) -> str:
        p50, p99 = percentile(self.latencies, 50), percentile(self.latencies, 99)
        return (
            f"reply p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"{self.answered}/{self.sent} answered, backlog {self.backlog_mid:,} halfway and "
            f"{self.backlog_end:,} at the end of sending: "
            f"{'growing' if self.growing(rate) else 'steady'}"
        )


async def seed(database: str, count: int) -> None:
    """`count` conversations of past LINE users, mid-flow, straight into the table."""
    engine = create_engine(database)
    try:
        async with engine.begin() as db:
            await db.execute(
                sa.text(
                    "INSERT INTO conversations (channel, address, flow, flow_version, state, "
                    "slots, selection, misses, pending_confirm, status, mode, version, "
                    "created_at, updated_at) "
                    "SELECT 'line', 'Useed' || lpad(to_hex(n), 31, '0'), 'career', 'seed', "
                    "'ask_role', '{}'::json, '[]'::json, 0, '[]'::json, 'active', 'bot', 1, "
                    "now(), now() FROM generate_series(1, :count) AS n"
                ),
                {"count": count},
            )
            await db.execute(sa.text("ANALYZE conversations"))
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ main


async def run(args: argparse.Namespace) -> None:
    sizes = QUICK if args.quick else Sizes()
    phases = args.only.split(",") if args.only else list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}; known: {PHASES}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"scale benchmark: python {platform.python_version()}, {os.cpu_count()} CPUs, load "
        f"average {load}{' (quick sizes)' if args.quick else ''}",
        flush=True,
    )
    postgres = await postgres_answers()
    if postgres is not None:
        print(f"PostgreSQL does not answer ({postgres}): its phases are skipped")
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        lab = Lab(Path(work), stack)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            rates = tuple(float(r) for r in args.open_rates.split(",") if r)
            bench = Bench(lab, http, sizes, rates)
            # Every ratio needs the bare endpoint's rate of this run.
            await bench.acks() if "acks" in phases else await _bare_only(bench)
            for phase in phases:
                print(f"\n== {phase}", flush=True)
                if phase in {"curve", "idle", "size"} and postgres is not None:
                    print("  skipped: no PostgreSQL")
                elif phase == "burst":
                    await bench.burst_default()
                elif phase == "curve":
                    await bench.curve()
                elif phase == "open":
                    await bench.open_loop()
                elif phase == "idle":
                    await bench.idle()
                elif phase == "engine":
                    bench.engine()
                elif phase == "size":
                    await bench.size()
    print("\nsummary")
    for line in bench.verdicts.lines:
        print(line)


async def _bare_only(bench: Bench) -> None:
    bare = await burst(
        bench.http, bench.lab.bare, walk(users(400), bench.sizes.acks), **bench._closed()
    )
    bench.bare_rate = bare.rate
    print(f"bare endpoint: {bare.rate:,.0f} acks/s (signature checked, JSON parsed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same goals")
    parser.add_argument("--only", default="", help=f"comma-separated phases of {PHASES}")
    parser.add_argument(
        "--open-rates",
        default="250",
        help="comma-separated rates (new users/s) also run in the open phase, without a goal: "
        "where the bot keeps up (default 250: 0.1x the bare endpoint the goals were set with)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
