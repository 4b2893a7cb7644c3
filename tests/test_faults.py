"""Exactly once under faults, with real processes (issue 10).

`yarigai serve` (WORKER_MODE=separate, two workers) runs as a child process under a supervisor
that starts it again whenever it exits. Each scenario drives it with signed LINE webhooks from
users of its own, all at once (a post refused or not connected is redelivered, same
`webhookEventId`, as LINE does, until acknowledged) against the fake LINE API, injects one
fault, and ends with the same oracle (`exactly_once`): read straight from the database, each
of its users' events was run once, and each user saw exactly their outbox, once and in order.

One serve per backend, on a database of its own, is shared by the scenarios, in file order (the
PostgreSQL cluster one has its own): a start costs about 20 s of CPU (serve and two workers
each import the app and load the NLU encoder), and a serve per scenario would double the run
time. Scenarios that kill serve leave the supervisor's next one running; the first scenario
uses the first start, killing it while its workers start.

Scenarios 8 to 11 (issue 12) run what several hosts would instead: two `serve --no-worker` web
processes behind a round-robin balancer and three `yarigai worker`s on a PostgreSQL database of
their own, killed and started again by the scenario, or cut from their database.

Run with `-s` to see each scenario's counts (turns, deliveries, duplicates, out of order).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from conftest import IN_CI, POSTGRES_URL
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
)
from fakes.pg_cluster import PgCluster, unavailable
from fakes.processes import alive, children, free_port, kill
from pydantic import TypeAdapter
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.line.adapter import WEBHOOK_PATH
from bot.channels.line.render import render
from bot.models import Outbound
from bot.storable_text import is_storable
from bot.store import create_engine
from bot.store.schema import conversations, inbox, messages, outbox

REPO = Path(__file__).resolve().parents[1]
USERS = 20
# One turn each, and a different answer for each (the career flow's first questions), so a
# reply shown twice or out of order is visible in what a user saw.
TEXTS = ("経理です", "成果が見えにくい", "これで全部", "はい", "いいえ")
REDELIVER_AFTER = 0.3  # seconds before LINE sends a refused post again (LINE: longer)
STALL_SECONDS = 3  # INBOX_STALL_SECONDS: /readyz says 503 once an event waited this long
SETTLE_WITHIN = 45.0  # seconds for everything to be answered once a fault is over (a dead
# worker's conversations wait for its leases to lapse: 10 s)
ORPHAN_GONE = 3.0  # seconds a killed serve's workers may take to be gone
DATABASE_OUTAGE = 10.0  # seconds the PostgreSQL cluster is stopped
# Seconds LINE answers 500 to everything: longer than one delivery's own retries (0.5, 2 and
# 5 s for the reply, again for the push, with jitter: about 16 s), so deliveries do fail and
# conversations fall behind, to the catch-up that must keep their order.
LINE_OUTAGE = 18.0
RESUMED_WITHIN = 15.0
REPLY_HELD = 7.0  # seconds LINE takes to answer a reply in scenario 5  # seconds after LINE is back by which everything must be delivered

GAVE_UP_A_ROUND = "not delivered, will retry"  # logged when a delivery falls behind

_OUTBOUND: TypeAdapter[list[Any]] = TypeAdapter(list[Outbound])


# ------------------------------------------------------------------ fixtures


pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared serve's loop


@dataclass
class Bot:
    """A running `yarigai serve` (supervised) on a database, talking to a fake LINE."""

    database: str
    fake: FakeLineApi
    serve: Serve | Fleet  # only its `url` and `log` are used here
    env: dict[str, str]
    root: Path  # the processes' working directory: their logs
    since: int = 0  # where the running scenario's part of serve's log begins

    def line(self) -> Line:
        """LINE's side for a scenario's own users (the scenario's part of the log begins)."""
        self.since = self.serve.log.stat().st_size if self.serve.log.exists() else 0
        route = self.serve.route if isinstance(self.serve, Fleet) else None
        return Line(self.serve.url, self.fake, route=route)

    def unhandled(self) -> list[str]:
        """Exceptions nobody handled in serve or its workers (asyncio's "Task exception was
        never retrieved", "Exception in callback") since the scenario began."""
        with self.serve.log.open(errors="replace") as log:
            log.seek(self.since)
            return [
                line.strip()
                for line in log
                if line.startswith("future: <Task") or "Exception in callback" in line
            ]

    def logged(self, text: str) -> int:
        """How many lines of serve's (and its workers') log contain `text`."""
        with self.serve.log.open(errors="replace") as log:
            return sum(text in line for line in log)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=("sqlite", "postgresql"))
async def bot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Bot]:
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    async with fresh_database(request.param, root) as database:
        with FakeLineApi(require_spec()) as fake:
            env = environment(database, fake)
            async with Serve(env, root) as serve:
                yield Bot(database, fake, serve, env, root)


@asynccontextmanager
async def fresh_database(backend: str, root: Path) -> AsyncIterator[str]:
    """A DATABASE_URL: a new SQLite file, or a new database on the PostgreSQL server of
    TEST_DATABASE_URL (created here, dropped after: nothing shared with other runs)."""
    if backend == "sqlite":
        yield f"sqlite:///{root / 'bot.db'}"
        return
    name = f"yarigai_faults_{uuid.uuid4().hex[:12]}"
    await _on_server(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _on_server(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the test's own (the machine's service is never stopped)."""
    problem = unavailable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"no PostgreSQL cluster of our own: {problem}")
        pytest.skip(f"no PostgreSQL cluster of our own: {problem}")
    with PgCluster.create() as made:
        yield made


async def _on_server(url: str, statement: str) -> None:
    """Run `statement` outside a transaction (CREATE DATABASE cannot run in one); skip, or
    fail under CI, when the server does not answer, as conftest's PostgreSQL fixtures do."""
    engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    except (OSError, TimeoutError, sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        where = make_url(url).render_as_string(hide_password=True)
        message = f"PostgreSQL at {where} does not answer ({error}); set TEST_DATABASE_URL"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        await engine.dispose()


def environment(database: str, fake: FakeLineApi) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database,
        "FLOWS_DIR": str(REPO / "flows"),
        "DEFAULT_FLOW": "career",
        "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
        "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
        "LINE_API_BASE_URL": fake.url,
        "PYTHONPATH": str(REPO),
        "WORKER_MODE": "separate",
        "SERVE_WORKERS": "2",
        "INBOX_STALL_SECONDS": str(STALL_SECONDS),
        "SESSION_SECRET": "faults",
        "LOG_LEVEL": "WARNING",
    }


# ------------------------------------------------------------------ processes


class Serve:
    """`yarigai serve` under a supervisor: started again as soon as it exits (as systemd's
    Restart=always would). Its output, and its workers', goes to `log`."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / "serve.log"
        self.starts = 0
        self.started = 0.0  # time.monotonic() when the running one was started
        self.process: subprocess.Popen[bytes] | None = None
        self._supervising: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Serve:
        self._start()
        self._supervising = asyncio.create_task(self._supervise())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._supervising is not None:
            self._supervising.cancel()
        self.kill(with_workers=True)
        if self.process is not None:
            self.process.wait(10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> list[int]:
        return children(self.pid)

    def kill(self, *, with_workers: bool = False) -> list[int]:
        """SIGKILL serve (and its workers); the supervisor starts it again. The workers' pids."""
        workers = self.workers()
        kill(self.pid, *(workers if with_workers else []))
        return workers

    async def healthy(self, within: float = 60.0) -> None:
        async with httpx.AsyncClient(timeout=1) as client:

            async def answers() -> bool:
                try:
                    return (await client.get(self.url + "/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await until_async(answers, within, what="serve answers /healthz")

    def _start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()
        self.starts += 1

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.process is not None and self.process.poll() is not None:
                self._start()


def extra_worker(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`yarigai worker` started by hand beside serve's own (scaling out, or by mistake); INFO
    logs, to see what it ran."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", "--nice", "0"],
            env={**env, "LOG_LEVEL": "INFO"},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


# ------------------------------------------------------------------ LINE's side


class Line:
    """LINE sending webhooks for many users: a user's events in order, each posted until the
    bot acknowledges it (a refused or unconnected post is redelivered, flagged, same event).
    As a context manager: conversations still going at the end are stopped."""

    def __init__(
        self, url: str, fake: FakeLineApi, *, route: Callable[[], str] | None = None
    ) -> None:
        """`route`: a load balancer in front of several web processes, the base URL of the one
        each post goes to (default: `url` every time)."""
        self.route = route
        # One client for every post, but a new connection each (no keep-alive): a killed
        # serve shows as a refused connection, not as a stale one failing later.
        self.client = httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.hooks = Webhooks(url + WEBHOOK_PATH, fake=fake, client=self.client)
        self.users: list[str] = []
        self.texts: Counter[str] = Counter()  # user -> text events acknowledged
        self.answers: Counter[int] = Counter()  # status -> posts answered so (0: no answer)
        self._talking: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Line:
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._talking:
            task.cancel()
        await asyncio.gather(*self._talking, return_exceptions=True)
        await self.client.aclose()

    async def deliver(self, *events: Mapping[str, Any], ascii_only: bool = False) -> None:
        body = self.hooks.body(*events, ascii_only=ascii_only)
        redelivered: bytes | None = None  # built (and checked) once, however many tries
        while True:
            url = None if self.route is None else self.route() + WEBHOOK_PATH
            try:
                status = (await self.hooks.post(body, url=url)).status_code
            except httpx.TransportError:
                status = 0
            self.answers[status] += 1
            if status == 200:
                break
            if redelivered is None:
                redelivered = self.hooks.body(*events, redelivery=True, ascii_only=ascii_only)
            body = redelivered
            await asyncio.sleep(REDELIVER_AFTER)
        for event in events:
            if event.get("message", {}).get("type") == "text":
                self.texts[event["source"]["userId"]] += 1

    async def converse(
        self, user: str, texts: Sequence[str] = TEXTS, *, pause: float = 0.0, follow: bool = True
    ) -> None:
        """Follow, then each of `texts`, `pause` seconds apart."""
        if user not in self.users:
            self.users.append(user)
        if follow:
            await self.deliver(self.hooks.follow(user))
        for text in texts:
            await asyncio.sleep(pause)
            await self.deliver(self.hooks.text(user, text))

    def start(
        self, count: int = USERS, texts: Sequence[str] = TEXTS, *, pause: float = 0.0
    ) -> list[str]:
        """`count` new users conversing at once, in the background; their ids."""
        users = [new_user_id() for _ in range(count)]
        self.keep_going(*(self.converse(user, texts, pause=pause) for user in users))
        return users

    def keep_going(self, *conversations: Coroutine[Any, Any, None]) -> None:
        self._talking += [asyncio.create_task(c) for c in conversations]

    async def finished(self, within: float = 60.0) -> None:
        """Until every conversation started is acknowledged to its end."""
        await asyncio.wait_for(asyncio.gather(*self._talking), within)

    @property
    def refused(self) -> int:
        """Posts not answered 200 (refused, cut, nobody listening)."""
        return sum(count for status, count in self.answers.items() if status != 200)

    @property
    def events(self) -> int:
        return len(self.users) + sum(self.texts.values())  # a follow each, and the texts

    def delivered(self, fake: FakeLineApi) -> int:
        return sum(len(fake.seen(user)) for user in self.users)


async def answering(serve: Serve | Fleet, line: Line, fake: FakeLineApi) -> None:
    """Until serve acknowledges and its workers answer (two users followed and were greeted):
    faults are injected into a running bot, not one still starting."""
    await serve.healthy()
    users = [new_user_id() for _ in range(2)]
    await asyncio.gather(*(line.converse(user, ()) for user in users))
    await until(lambda: all(fake.seen(u) for u in users), 60, what="workers answer")


# ------------------------------------------------------------------ the oracle


@dataclass
class Snapshot:
    """What the database holds about some LINE users, read directly (not through the bot)."""

    unsettled: list[str]  # inbox rows not processed, or settled as failed
    unsent: list[str]  # outbox rows not (yet) sent: pending or failed
    waiting: int  # inbox rows not processed yet
    pending: int  # outbox rows not delivered yet
    inbound: Counter[str]  # LINE user -> user messages in the transcript (one per turn)
    outbox: dict[str, list[str]]  # LINE user -> rendered messages of its outbox, in id order


async def snapshot(database: str, users: Sequence[str]) -> Snapshot:
    engine = create_engine(database)
    try:
        async with engine.connect() as db:
            rows = await db.execute(
                sa.select(inbox.c.id, inbox.c.address, inbox.c.processed_at, inbox.c.error).where(
                    inbox.c.address.in_(users)
                )
            )
            unsettled = [
                f"inbox {row.id} ({row.address[-6:]}): "
                + ("never processed" if row.processed_at is None else f"failed: {row.error}")
                for row in rows
                if row.processed_at is None or row.error is not None
            ]
            turns = await db.execute(
                sa.select(conversations.c.address, sa.func.count(messages.c.id))
                .join(messages, messages.c.conversation_id == conversations.c.id)
                .where(
                    conversations.c.channel == "line",
                    conversations.c.address.in_(users),
                    messages.c.direction == "in",
                )
                .group_by(conversations.c.address)
            )
            inbound = Counter({address: count for address, count in turns})
            items = await db.execute(
                sa.select(
                    outbox.c.id,
                    outbox.c.address,
                    outbox.c.payload,
                    outbox.c.status,
                    outbox.c.last_error,
                )
                .where(outbox.c.channel == "line", outbox.c.address.in_(users))
                .order_by(outbox.c.id)
            )
            unsent: list[str] = []
            pending = 0
            rendered: dict[str, list[str]] = {}
            for item in items:
                pending += item.status == "pending"
                if item.status != "sent":
                    unsent.append(
                        f"outbox {item.id} ({item.address[-6:]}): {item.status}, {item.last_error}"
                    )
                rendered.setdefault(item.address, []).extend(_rendered(json.dumps(item.payload)))
    finally:
        await engine.dispose()
    waiting = sum(1 for problem in unsettled if problem.endswith("never processed"))
    return Snapshot(unsettled, unsent, waiting, pending, inbound, rendered)


@functools.lru_cache(maxsize=4096)
def _rendered(payload: str) -> tuple[str, ...]:
    """An outbox payload as the LINE messages the bot sends for it (the same questions come
    up again and again: kept, as rendering them is not cheap)."""
    return tuple(_shown(message.to_dict()) for message in render(_OUTBOUND.validate_json(payload)))


def _shown(message: Mapping[str, Any]) -> str:
    """A message as the user's phone shows it (the request's JSON, canonical)."""
    return json.dumps(message, sort_keys=True, ensure_ascii=False)


@dataclass
class Tally:
    events: int
    turns: int
    deliveries: int
    duplicates: int  # messages a user saw more often than their outbox holds them
    missing: int  # ... less often
    out_of_order: int  # users shown the right messages in another order
    refused_posts: int

    def __str__(self) -> str:
        return (
            f"events={self.events} turns={self.turns} deliveries={self.deliveries} "
            f"duplicates={self.duplicates} missing={self.missing} "
            f"out_of_order={self.out_of_order} refused_posts={self.refused_posts}"
        )


async def settle(database: str, fake: FakeLineApi, line: Line, within: float) -> None:
    """Until every event is run, every outbox item is sent, and LINE has shown each user as
    many messages as their outbox holds."""

    async def done() -> bool:
        now = await snapshot(database, line.users)
        return (
            now.waiting == 0
            and now.pending == 0
            and all(len(fake.seen(u)) >= len(now.outbox.get(u, [])) for u in line.users)
        )

    await until_async(done, within, what="every event answered", every=0.25)
    # A moment for anything late (a second delivery of the same reply) to show up.
    await asyncio.sleep(1.0)


async def exactly_once(bot: Bot, line: Line, name: str, *, ordered: bool = True) -> Tally:
    """Check, from the database and what LINE showed: every event processed (and not failed),
    one turn per text event, every outbox item sent, each user shown exactly the messages of
    their outbox, once each and (`ordered`) in outbox order; and no exception left unhandled
    in the bot's processes meanwhile. Prints the counts."""
    fake = bot.fake
    now = await snapshot(bot.database, line.users)
    problems = [*now.unsettled, *now.unsent]
    problems += [f"unhandled in a bot process: {error}" for error in bot.unhandled()[:5]]
    duplicates = missing = out_of_order = deliveries = 0
    for user in line.users:
        if now.inbound[user] != line.texts[user]:
            problems.append(
                f"{user[-6:]}: {now.inbound[user]} turns for {line.texts[user]} text events"
            )
        expected = now.outbox.get(user, [])
        seen = [_shown(delivered.message) for delivered in fake.seen(user)]
        deliveries += len(seen)
        extra = sum((Counter(seen) - Counter(expected)).values())
        lacking = sum((Counter(expected) - Counter(seen)).values())
        duplicates += extra
        missing += lacking
        if extra or lacking:
            problems.append(f"{user[-6:]}: {extra} shown too often, {lacking} never shown")
        elif seen != expected:
            out_of_order += 1
            if ordered:
                problems.append(f"{user[-6:]}: shown out of order")
    tally = Tally(
        events=line.events,
        turns=sum(now.inbound[user] for user in line.users),
        deliveries=deliveries,
        duplicates=duplicates,
        missing=missing,
        out_of_order=out_of_order,
        refused_posts=line.refused,
    )
    print(f"\n[faults] {name}: {tally}")
    assert fake.invalid == [], fake.invalid[:3]
    assert not problems, "\n".join(problems[:30])
    return tally


async def until_async(
    check: Callable[[], Awaitable[bool]],
    within: float,
    *,
    what: str = "condition",
    every: float = 0.1,
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(every)


async def until(check: Callable[[], bool], within: float, *, what: str = "condition") -> None:
    async def checked() -> bool:
        return check()

    await until_async(checked, within, what=what)


async def still_running(pids: Sequence[int], *, after: float) -> list[int]:
    """Those of `pids` still running `after` seconds from now (fewer if all go sooner)."""
    deadline = time.monotonic() + after
    # Nothing to wait on but /proc: polled.
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def backend(bot: Bot) -> str:
    return make_url(bot.database).get_backend_name()


def _spent_tokens_refused(fake: FakeLineApi) -> int:
    return sum(1 for call in fake.calls_of("reply") if call.status == 400)


# ------------------------------------------------------------------ scenarios


async def test_1_serve_killed_while_its_workers_start_leaves_no_worker_behind(bot: Bot) -> None:
    serve, fake = bot.serve, bot.fake
    async with bot.line() as line:
        line.start()  # from now on: refused while no serve listens, redelivered meanwhile
        earlier: list[int] = []
        if time.monotonic() - serve.started > 1.0:  # not just started: other scenarios ran
            running = serve.pid
            earlier = serve.kill()  # its workers get SIGTERM and finish what they run
            await until(lambda: serve.pid != running, 5, what="the supervisor restarts serve")
        # Killed as soon as both its workers exist: they are still starting (importing,
        # opening the store); events are waiting for them.
        first = serve.pid
        await until(lambda: len(children(first)) == 2, 60, what="serve starts its workers")
        starting = serve.kill()
        # Gone at once: they must not run beside the next serve's workers (asserted at the
        # end, once the rest is checked too; killed here whatever the outcome).
        lingering = await still_running(starting, after=ORPHAN_GONE)
        kill(*lingering)
        await line.finished(90)
        await settle(bot.database, fake, line, SETTLE_WITHIN)
        assert not [pid for pid in earlier if alive(pid)], "an earlier serve's workers still run"
    await exactly_once(bot, line, f"1 kill -9 at start/{backend(bot)}")
    assert not lingering, (
        f"{len(lingering)} workers of the serve killed while they started still ran "
        f"{ORPHAN_GONE:.0f} s later"
    )


async def test_2_an_extra_worker_beside_serves_doubles_nothing(bot: Bot) -> None:
    serve, fake = bot.serve, bot.fake
    log = bot.root / "extra-worker.log"
    async with bot.line() as line:
        await answering(serve, line, fake)
        extra = extra_worker(bot.env, bot.root, log)
        try:
            await until(
                lambda: "running events" in log.read_text(errors="replace"),
                60,
                what="the extra worker runs",
            )
            line.start()  # a burst: both workers find the same events waiting
            await line.finished()
            await settle(bot.database, fake, line, SETTLE_WITHIN)
        finally:
            kill(extra.pid)
            extra.wait(10)
    # Workers take conversations by lease, whichever has them; and whatever a lease allowed,
    # the store makes sure nothing is done twice.
    await exactly_once(bot, line, f"2 extra worker/{backend(bot)}")
    said = log.read_text(errors="replace")
    print(
        f"[faults]   the extra worker computed {said.count('classified state=')} turns; "
        f"{said.count('was handled elsewhere')} of them the other worker had saved first"
    )


async def test_3_postgresql_stopped_under_load_then_everything_answered_once(
    cluster: PgCluster, tmp_path: Path
) -> None:
    database = cluster.url
    with FakeLineApi(require_spec()) as fake:
        env = environment(database, fake)
        async with Serve(env, tmp_path) as serve, Readiness(serve.url, database) as readiness:
            bot = Bot(database, fake, serve, env, tmp_path)
            async with bot.line() as line:
                await answering(serve, line, fake)
                # Slow replies keep users' later events queued in the workers when the
                # database goes away.
                fake.slow("reply", 0.3, times=10**6)
                users = [new_user_id() for _ in range(USERS)]
                line.users += users
                # A burst: a follow and two texts per user in one body; the stop right after.
                await asyncio.gather(
                    *(
                        line.deliver(
                            line.hooks.follow(user),
                            line.hooks.text(user, TEXTS[0]),
                            line.hooks.text(user, TEXTS[1]),
                        )
                        for user in users
                    )
                )
                queued = (await snapshot(database, users)).waiting
                cluster.stop()
                stopped = len(readiness.seen)
                # Webhooks keep coming: refused while the database is away, redelivered.
                line.keep_going(
                    *(line.converse(user, TEXTS[2:], pause=1.0, follow=False) for user in users)
                )
                await asyncio.sleep(DATABASE_OUTAGE)  # the outage: its length is the scenario
                cluster.start()
                restarted = time.monotonic()
                await line.finished()
                await settle(database, fake, line, SETTLE_WITHIN)
                answered = time.monotonic() - restarted
                await until(lambda: readiness.latest == 200, 10, what="/readyz 200 again")
            tally = await exactly_once(bot, line, "3 PostgreSQL stopped/postgresql")
    since_stop = readiness.seen[stopped:]
    not_ready = [body for status, body in since_stop if status == 503]
    stalled = [body for body in not_ready if "not draining" in body]
    print(
        f"[faults]   {queued} events queued at the stop; all answered {answered:.1f} s after "
        f"the restart; /readyz since the stop: {len(not_ready)} x 503 ({len(stalled)} "
        f"'inbox not draining'), {len(since_stop) - len(not_ready)} other; {tally.events} events"
    )
    assert not_ready, "/readyz never said 503 while the database was away"
    assert not readiness.ready_while_stalled, (
        f"/readyz said 200 while an event had waited {max(readiness.ready_while_stalled):.0f} s"
    )


async def test_4_nul_and_lone_surrogates_spoil_nobody_else(bot: Bot) -> None:
    serve, fake = bot.serve, bot.fake
    async with bot.line() as line:
        await answering(serve, line, fake)
        nul, surrogate = new_user_id(), new_user_id()
        line.users += [nul, surrogate]

        async def unstorable(user: str, text: str) -> None:
            await line.deliver(line.hooks.follow(user))
            # \ud800 cannot be UTF-8: it travels as the JSON escape, as LINE could send it.
            await line.deliver(line.hooks.text(user, text), ascii_only=True)
            await line.converse(user, TEXTS[1:], follow=False)

        line.start()
        line.keep_going(unstorable(nul, "経理\x00です"), unstorable(surrogate, "経理\ud800です"))
        web = await asyncio.gather(*(web_chat(serve.url, text) for text in WEB_TEXTS))
        await line.finished()
        await settle(bot.database, fake, line, SETTLE_WITHIN)
    assert web == [200 if is_storable(text) else 422 for text in WEB_TEXTS], web
    await exactly_once(bot, line, f"4 NUL and lone surrogate/{backend(bot)}")
    heard = await first_words(bot.database, [nul, surrogate])
    assert heard == {nul: "経理です", surrogate: "経理です"}  # scrubbed, then run
    print(f"[faults]   web chat answers by status: {dict(Counter(web))}")


async def test_5_serve_killed_as_replies_reach_line_shows_no_reply_twice(bot: Bot) -> None:
    serve, fake = bot.serve, bot.fake
    spent_before = _spent_tokens_refused(fake)
    async with bot.line() as line:
        await answering(serve, line, fake)
        # LINE shows each reply at once but answers only after REPLY_HELD: longer than the
        # workers' grace when serve dies (PR_SET_PDEATHSIG sends them SIGTERM; they give what
        # runs 5 s), so their deliveries are cut short after LINE showed the replies.
        fake.slow("reply", REPLY_HELD, times=10**6, accept=True)
        try:
            line.start(pause=0.2)
            await until(lambda: fake.holding >= 5, 30, what="replies in flight")
            in_flight = fake.holding
            killed = serve.kill()
        finally:
            fake.clear_faults()
        await line.finished(90)
        await settle(bot.database, fake, line, SETTLE_WITHIN)
        assert not [pid for pid in killed if alive(pid)], "the killed serve's workers still run"
    await exactly_once(bot, line, f"5 kill -9 as replies land/{backend(bot)}")
    refused = _spent_tokens_refused(fake) - spent_before
    print(f"[faults]   {in_flight} replies in flight at the kill; {refused} spent tokens refused")


async def test_6_line_down_then_every_reply_once_in_order_within_seconds(bot: Bot) -> None:
    serve, fake = bot.serve, bot.fake
    failed_before = sum(1 for call in fake.calls if call.status == 500)
    behind_before = bot.logged(GAVE_UP_A_ROUND)
    async with bot.line() as line:
        await answering(serve, line, fake)
        line.start(pause=1.0)  # about five seconds of writing, all while LINE is down
        await until(lambda: line.delivered(fake) >= USERS, 30, what="first replies")
        fake.down()
        try:
            await asyncio.sleep(LINE_OUTAGE)  # the outage: its length is the scenario
        finally:
            fake.up()
        back = time.monotonic()
        await line.finished()
        await settle(bot.database, fake, line, RESUMED_WITHIN)
        resumed = time.monotonic() - back
    failed = sum(1 for call in fake.calls if call.status == 500) - failed_before
    behind = bot.logged(GAVE_UP_A_ROUND) - behind_before
    await exactly_once(bot, line, f"6 LINE down/{backend(bot)}")
    print(
        f"[faults]   {failed} calls answered 500; {behind} deliveries left for the catch-up; "
        f"all delivered {resumed:.1f} s after up()"
    )


async def test_7_a_worker_killed_is_restarted_by_serve_which_keeps_acknowledging(
    bot: Bot,
) -> None:
    serve, fake = bot.serve, bot.fake
    async with bot.line() as line:
        await answering(serve, line, fake)
        starts = serve.starts
        line.start(pause=0.8)  # about four seconds of writing, the worker's gap included
        await until(lambda: line.delivered(fake) >= USERS, 30, what="first replies")
        before = serve.workers()
        assert len(before) == 2
        kill(before[0])
        killed = time.monotonic()
        await until(lambda: bool(set(serve.workers()) - set(before)), 15, what="a new worker")
        restarted = time.monotonic() - killed
        await line.finished()
        await settle(bot.database, fake, line, SETTLE_WITHIN)
        assert serve.starts == starts  # serve itself never stopped
        assert line.refused == 0  # and acknowledged all along, the worker's gap included
    await exactly_once(bot, line, f"7 kill -9 of a worker/{backend(bot)}")
    print(f"[faults]   a new worker {restarted:.1f} s after the kill")


# ------------------------------------------------------------------ several hosts (issue 12)

FLEET_USERS = 60
# Ten answers each (600 messages in all): the career flow's role, frustrations and fit check.
FLEET_TEXTS = (
    "経理です",
    "毎日同じことの繰り返し",
    "成果が見えにくい",
    "これで全部",
    "いいえ",
    "はい",
    "そうでもない",
    "得意です",
    "あんまり",
    "はい",
)
FLEET_PAUSE = 2.5  # seconds between a user's messages: traffic through every kill below
FLEET_KILLS = 3  # rounds of: kill -9 a random worker, then a random web process, restart both
LINE_LONG_OUTAGE = 120.0  # seconds LINE answers 500 in scenario 9: reply tokens go stale


class Fleet:
    """What several hosts run on one PostgreSQL: `serve --no-worker` web processes behind a
    load balancer (`route`) and `yarigai worker`s, each killed by pid and started again by the
    scenario (as an orchestrator restarts a crashed container). All of them log to `log`."""

    def __init__(self, env: dict[str, str], cwd: Path, *, webs: int, workers: int) -> None:
        self.env = env
        self.cwd = cwd
        self.log = cwd / "fleet.log"
        self.ports = [free_port() for _ in range(webs)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.url = self.urls[0]
        self.webs: list[subprocess.Popen[bytes] | None] = [None] * webs
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._next = 0

    def __enter__(self) -> Fleet:
        for index in range(len(self.webs)):
            self.start_web(index)
        for index in range(len(self.workers)):
            self.start_worker(index)
        return self

    def __exit__(self, *_: object) -> None:
        running = [p for p in (*self.webs, *self.workers) if p is not None]
        kill(*(p.pid for p in running))
        for process in running:
            process.wait(10)

    def start_web(self, index: int) -> None:
        port = str(self.ports[index])
        self.webs[index] = self._spawn("serve", "--port", port, "--no-worker")

    def start_worker(self, index: int) -> None:
        self.workers[index] = self._spawn("worker", "--nice", "0")

    def exited(self) -> list[str]:
        """The processes that are not running (exited, or killed and not started again)."""
        named = [f"web {i}" for i in range(len(self.webs))]
        named += [f"worker {i}" for i in range(len(self.workers))]
        processes = [*self.webs, *self.workers]
        return [
            name
            for name, p in zip(named, processes, strict=True)
            if p is None or p.poll() is not None
        ]

    def kill_web(self, chooser: random.Random) -> int:
        """kill -9 a web process chosen by `chooser`; its index, to start it again."""
        return self._kill(self.webs, chooser)

    def kill_worker(self, chooser: random.Random) -> int:
        return self._kill(self.workers, chooser)

    def route(self) -> str:
        """The load balancer: round robin over the web processes still running (a post to one
        that is starting is refused, and LINE redelivers it to the next)."""
        running = [i for i, p in enumerate(self.webs) if p is not None and p.poll() is None]
        self._next += 1
        index = running[self._next % len(running)] if running else 0
        return f"http://127.0.0.1:{self.ports[index]}"

    async def healthy(self, within: float = 90.0) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            for port in self.ports:

                async def answers(port: int = port) -> bool:
                    try:
                        url = f"http://127.0.0.1:{port}/healthz"
                        return (await client.get(url)).status_code == 200
                    except httpx.TransportError:
                        return False

                await until_async(answers, within, what=f"web process on {port} answers")

    def stop(self, process: subprocess.Popen[bytes] | None) -> float:
        """SIGTERM, as a rolling restart stops a process; the seconds it took to exit."""
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        return time.monotonic() - started

    def _kill(self, processes: list[subprocess.Popen[bytes] | None], chooser: random.Random) -> int:
        index = chooser.randrange(len(processes))
        process = processes[index]
        assert process is not None
        kill(process.pid)
        process.wait(10)
        return index

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "bot.cli", *args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@pytest_asyncio.fixture(loop_scope="module")
async def fleet(tmp_path: Path) -> AsyncIterator[Bot]:
    """Two web processes and three workers on a PostgreSQL database of their own."""
    async with fresh_database("postgresql", tmp_path) as database:
        with FakeLineApi(require_spec()) as fake:
            env = environment(database, fake)
            with Fleet(env, tmp_path, webs=2, workers=3) as processes:
                yield Bot(database, fake, processes, env, tmp_path)


async def test_8_fleet_answers_600_messages_once_in_order_while_processes_are_killed(
    fleet: Bot,
) -> None:
    """2 web + 3 workers; 600 messages from 60 users; meanwhile a random worker and a random
    web process are killed -9 and started again, several times."""
    processes, fake = fleet.serve, fleet.fake
    assert isinstance(processes, Fleet)
    seed = random.randrange(10**6)
    chooser = random.Random(seed)
    killed: list[str] = []
    async with fleet.line() as line:
        await processes.healthy()
        await answering(processes, line, fake)
        line.start(FLEET_USERS, FLEET_TEXTS, pause=FLEET_PAUSE)
        for _ in range(FLEET_KILLS):
            await asyncio.sleep(3.0)
            worker = processes.kill_worker(chooser)
            await asyncio.sleep(2.0)
            web = processes.kill_web(chooser)
            killed += [f"worker {worker}", f"web {web}"]
            await asyncio.sleep(2.0)
            processes.start_worker(worker)
            processes.start_web(web)
        await line.finished(240)
        await settle(fleet.database, fake, line, SETTLE_WITHIN)
    tally = await exactly_once(fleet, line, "8 2 web + 3 workers, kill -9 and restart/postgresql")
    assert sum(line.texts.values()) >= FLEET_USERS * len(FLEET_TEXTS)
    print(
        f"[faults]   seed {seed}; killed in turn: {', '.join(killed)}; {tally.refused_posts} "
        "posts refused and redelivered"
    )


async def test_9_fleet_line_down_two_minutes_then_each_reply_once_by_token_or_push(
    fleet: Bot,
) -> None:
    """LINE answers 500 for two minutes while users write: afterwards every reply goes out
    once, by reply token where it is still fresh, else by push under its retry key."""
    processes, fake = fleet.serve, fleet.fake
    assert isinstance(processes, Fleet)
    async with fleet.line() as line:
        await processes.healthy()
        await answering(processes, line, fake)
        fake.down()
        try:
            # Messages spread over the outage: early ones' tokens are stale when LINE is back,
            # the last ones' still fresh.
            line.start(USERS, TEXTS, pause=LINE_LONG_OUTAGE / len(TEXTS) * 0.9)
            await asyncio.sleep(LINE_LONG_OUTAGE)
        finally:
            fake.up()
        back = time.time()
        await line.finished()
        await settle(fleet.database, fake, line, RESUMED_WITHIN)
        resumed = time.time() - back
    await exactly_once(fleet, line, "9 LINE down two minutes/postgresql")
    after = [c for c in fake.calls if c.arrived >= back and c.status == 200]
    by_reply = [c for c in after if c.operation == "reply"]
    by_push = [c for c in after if c.operation == "push"]
    print(
        f"[faults]   after LINE came back: {len(by_reply)} replies by token, {len(by_push)} "
        f"pushes; all delivered {resumed:.1f} s after up()"
    )
    assert by_push, "no stale reply went by push"
    assert by_reply, "no fresh reply token was used"
    assert all(c.retry_key is not None for c in by_push)


async def test_10_fleet_rolling_restart_by_sigterm_loses_and_doubles_nothing(fleet: Bot) -> None:
    """Every worker, then every web process, stopped with SIGTERM and started again, one at a
    time, while users write: what a stopped worker held passes to the others at once (it gives
    its leases back), what it had not started stays in the inbox; nothing lost or doubled."""
    processes, fake = fleet.serve, fleet.fake
    assert isinstance(processes, Fleet)
    stops: list[str] = []
    async with fleet.line() as line:
        await processes.healthy()
        await answering(processes, line, fake)
        line.start(USERS, TEXTS, pause=1.5)
        for index in range(len(processes.workers)):
            await asyncio.sleep(1.0)
            stops.append(f"worker {index} {processes.stop(processes.workers[index]):.1f} s")
            processes.start_worker(index)
        for index in range(len(processes.webs)):
            stops.append(f"web {index} {processes.stop(processes.webs[index]):.1f} s")
            processes.start_web(index)
            await processes.healthy()
        await line.finished(120)
        await settle(fleet.database, fake, line, SETTLE_WITHIN)
    tally = await exactly_once(fleet, line, "10 rolling restart by SIGTERM/postgresql")
    print(
        f"[faults]   stopped (time to exit): {', '.join(stops)}; {tally.refused_posts} posts "
        "refused and redelivered"
    )


async def test_11_fleet_postgresql_away_ten_seconds_then_every_process_recovers_by_itself(
    cluster: PgCluster, tmp_path: Path
) -> None:
    """2 web + 3 workers on a PostgreSQL cluster of the test's own, stopped for 10 s while users
    write: meanwhile webhooks are refused (LINE redelivers) and every web process's /readyz says
    not ready; after, every process carries on by itself (none exits, none is restarted) and
    everything is answered once, in order."""
    database = cluster.url
    with FakeLineApi(require_spec()) as fake:
        env = environment(database, fake)
        with Fleet(env, tmp_path, webs=2, workers=3) as processes:
            bot = Bot(database, fake, processes, env, tmp_path)
            async with AsyncExitStack() as polling:
                readiness = [
                    await polling.enter_async_context(Readiness(url, database))
                    for url in processes.urls
                ]
                async with bot.line() as line:
                    await answering(processes, line, fake)
                    # Slow replies keep events queued in the workers when the database goes.
                    fake.slow("reply", 0.3, times=10**6)
                    line.start(USERS, TEXTS, pause=2.0)  # through the outage and after it
                    await asyncio.sleep(2.0)  # traffic flowing: turns and deliveries under way
                    answers_before = line.answers.copy()
                    cluster.stop()
                    stopped = [len(web.seen) for web in readiness]
                    await asyncio.sleep(DATABASE_OUTAGE)
                    cluster.start()
                    restarted = time.monotonic()
                    await line.finished(120)
                    await settle(database, fake, line, SETTLE_WITHIN)
                    answered = time.monotonic() - restarted
                    for web in readiness:
                        await until(lambda web=web: web.latest == 200, 10, what="/readyz 200")
            exited = processes.exited()
            tally = await exactly_once(bot, line, "11 fleet, PostgreSQL stopped/postgresql")
    during = line.answers - answers_before
    not_ready = [
        sum(status == 503 for status, _ in web.seen[since:])
        for web, since in zip(readiness, stopped, strict=True)
    ]
    print(
        f"[faults]   posts from the stop on answered {dict(during)} (0: no answer); all "
        f"{tally.events} events answered {answered:.1f} s after the restart; /readyz 503s "
        f"per web process: {not_ready}"
    )
    assert not exited, f"processes gone after the outage: {exited}"
    assert during[503], "no webhook was answered 503 while the database was away"
    assert all(not_ready), f"a web process's /readyz never said 503: {not_ready}"
    assert not any(web.ready_while_stalled for web in readiness), "/readyz 200 while stalled"


# ------------------------------------------------------------------ helpers of scenarios

WEB_TEXTS = (*["経理です"] * 8, "経理\x00です", "経理\ud800です")


async def web_chat(url: str, text: str) -> int:
    """A web chat user: a new session, then `text`; the status the message got."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = await client.post("/api/chat/sessions")
        assert started.status_code == 200, started.text
        session = started.json()["session"]
        # Escaped, so a lone surrogate can be sent at all (as any JSON client could).
        body = json.dumps({"text": text}, ensure_ascii=True)
        answer = await client.post(
            f"/api/chat/sessions/{session}/messages",
            content=body,
            headers={"content-type": "application/json"},
        )
        return answer.status_code


async def first_words(database: str, users: Sequence[str]) -> dict[str, str]:
    """The first thing each LINE user said, as the transcript keeps it."""
    engine = create_engine(database)
    try:
        async with engine.connect() as db:
            rows = await db.execute(
                sa.select(conversations.c.address, messages.c.text)
                .join(messages, messages.c.conversation_id == conversations.c.id)
                .where(conversations.c.address.in_(users), messages.c.direction == "in")
                .order_by(messages.c.id)
            )
            heard: dict[str, str] = {}
            for address, text in rows:
                heard.setdefault(address, text)
    finally:
        await engine.dispose()
    return heard


class Readiness:
    """A web process's /readyz (at `url`) polled in the background: every (status, body) seen, in order, and every 200
    given while the database held an event waiting longer than INBOX_STALL_SECONDS."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database
        self.seen: list[tuple[int, str]] = []
        self.ready_while_stalled: list[float] = []  # how long the oldest event had waited
        self._polling: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Readiness:
        self._polling = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._polling is not None:
            self._polling.cancel()
            await asyncio.gather(self._polling, return_exceptions=True)

    @property
    def latest(self) -> int:
        """The last status seen (0: none yet, or no answer)."""
        return self.seen[-1][0] if self.seen else 0

    async def _poll(self) -> None:
        engine = create_engine(self.database)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                while True:
                    asked = datetime.now(UTC)
                    try:
                        answer = await client.get(self.url + "/readyz")
                        self.seen.append((answer.status_code, answer.text))
                    except httpx.TransportError as error:
                        self.seen.append((0, type(error).__name__))
                    if self.latest == 200:
                        await self._check_not_stalled(engine, asked)
                    await asyncio.sleep(0.25)
        finally:
            await engine.dispose()

    async def _check_not_stalled(self, engine: AsyncEngine, asked: datetime) -> None:
        """An event still pending now that was received well before /readyz said 200 was
        pending then too: /readyz should have said 503."""
        try:
            async with engine.connect() as db:
                oldest = (
                    await db.execute(
                        sa.select(sa.func.min(inbox.c.received_at)).where(
                            inbox.c.processed_at.is_(None)
                        )
                    )
                ).scalar_one_or_none()
        except (sa.exc.SQLAlchemyError, OSError):
            return  # the database is away: nothing to compare with
        if oldest is None:
            return
        if oldest.tzinfo is None:  # SQLite keeps UTC without its offset
            oldest = oldest.replace(tzinfo=UTC)
        waited = (asked - oldest).total_seconds()
        if waited > STALL_SECONDS + 1.0:  # a second's slack for clocks and rounding
            self.ready_while_stalled.append(waited)
