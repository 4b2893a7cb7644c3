"""WORKER_MODE=separate: `yarigai serve` records LINE events and `yarigai worker` answers them.

Real processes on 127.0.0.1 and the fake LINE API, as deployed: the server started with the
`yarigai` command line, the worker started by it (or by hand), one SQLite file between them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import pytest
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
)
from fakes.processes import alive, children, cpu_seconds, free_port, wait_healthy

from bot.channels.line.adapter import WEBHOOK_PATH
from bot.config import Settings
from bot.core.backpressure import BUSY_AT, HOLD, Foreground, SharedMoment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api


def environment(database: Path | str, fake: FakeLineApi) -> dict[str, str]:
    """`database`: a SQLite file, or a database URL."""
    return {
        **os.environ,
        "DATABASE_URL": database if isinstance(database, str) else f"sqlite:///{database}",
        "FLOWS_DIR": str(REPO / "flows"),
        "DEFAULT_FLOW": "career",
        "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
        "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
        "LINE_API_BASE_URL": fake.url,
        "PYTHONPATH": str(REPO),
        "WORKER_MODE": "separate",
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def yarigai(
    *args: str, env: dict[str, str], cwd: Path, stderr: IO[bytes] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`yarigai ARGS` in a child process (an empty working directory: no developer's .env)."""
    command = [sys.executable, "-m", "bot.cli", *args]
    process = subprocess.Popen(command, env=env, cwd=cwd, stderr=stderr)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_the_worker_started_by_serve_answers_what_the_server_records(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    user = new_user_id()
    port = free_port()
    env = environment(tmp_path / "bot.db", fake)
    with yarigai("serve", "--port", str(port), env=env, cwd=tmp_path) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        assert (await hooks.send(hooks.follow(user))).status_code == 200
        await until(lambda: bool(fake.seen(user)))
        greeted = len(fake.seen(user))
        assert (await hooks.send(hooks.text(user, "経理です"))).status_code == 200
        await until(lambda: len(fake.seen(user)) > greeted)
        [worker] = children(server.pid)

        # Stopping the server stops its worker too (uvicorn ends the process itself on
        # SIGTERM, so the worker notices its parent is gone).
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        await until(lambda: not alive(worker), within=15)
    assert fake.invalid == []


def test_serve_starts_serve_workers_and_still_honours_the_deprecated_worker_processes(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    for variable, count in (("SERVE_WORKERS", 3), ("WORKER_PROCESSES", 2)):
        env = {**environment(tmp_path / f"{variable}.db", fake), variable: str(count)}
        port = free_port()
        log = tmp_path / f"{variable}.log"
        with (
            log.open("wb") as stderr,
            yarigai("serve", "--port", str(port), env=env, cwd=tmp_path, stderr=stderr) as server,
        ):
            wait_healthy(server, f"http://127.0.0.1:{port}")
            assert len(children(server.pid)) == count
        deprecated = "WORKER_PROCESSES is deprecated: set SERVE_WORKERS" in log.read_text()
        assert deprecated == (variable == "WORKER_PROCESSES")
    # Both set: the new name wins.
    both = Settings(_env_file=None, serve_workers=2, worker_processes=5)
    assert both.workers_beside_server == 2
    assert Settings(_env_file=None).workers_beside_server == 1


async def test_events_recorded_without_a_worker_are_answered_once_when_it_starts(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    user = new_user_id()
    port = free_port()
    env = environment(tmp_path / "bot.db", fake)
    with yarigai("serve", "--port", str(port), "--no-worker", env=env, cwd=tmp_path) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        follow = hooks.follow(user)
        for _ in range(2):  # a redelivery too
            assert (await hooks.send(follow)).status_code == 200
        await asyncio.sleep(1.0)
        assert fake.seen(user) == []  # recorded; nobody runs turns in this server

        with yarigai("worker", "--nice", "0", env=env, cwd=tmp_path):
            await until(lambda: bool(fake.seen(user)))
            greeting = fake.texts(user)
            await asyncio.sleep(1.0)
            assert fake.texts(user) == greeting  # once, not twice

            # And what arrives while it runs is found within moments.
            assert (await hooks.send(hooks.text(user, "経理です"))).status_code == 200
            await until(lambda: len(fake.texts(user)) > len(greeting), within=10)
    assert fake.invalid == []


async def test_two_workers_share_the_users_and_answer_each_message_once_in_order(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    """No shard numbers: the workers take conversations by lease, whichever is free."""
    users = [new_user_id() for _ in range(8)]
    port = free_port()
    env = environment(tmp_path / "bot.db", fake)
    with yarigai("serve", "--port", str(port), "--no-worker", env=env, cwd=tmp_path) as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(server, url)
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        for user in users:
            assert (await hooks.send(hooks.follow(user))).status_code == 200
            assert (await hooks.send(hooks.text(user, "経理です"))).status_code == 200
        with (
            yarigai("worker", "--nice", "0", env=env, cwd=tmp_path),
            yarigai("worker", "--nice", "0", env=env, cwd=tmp_path),
        ):
            await until(lambda: all(len(replies(fake, u)) >= 2 for u in users))
            await asyncio.sleep(1.0)
    # Each user: two replies, no more, and the same conversation as everyone else (a greeting,
    # then the answer to the role), so neither was lost, repeated or run out of order.
    conversations = {tuple(replies(fake, user)) for user in users}
    assert len(conversations) == 1, {user[-6:]: replies(fake, user) for user in users}
    [(greeting, answer)] = conversations
    assert greeting != answer
    assert fake.invalid == []


async def test_web_and_workers_on_postgresql_share_by_lease_and_outlive_killed_ones(
    fake: FakeLineApi, tmp_path: Path, postgres_database: str
) -> None:
    """Two web processes and three workers, no shard numbers, woken by NOTIFY. A worker and
    a web process are killed mid-traffic: the dead worker's conversations pass to the others,
    the dead web's traffic goes to the other (as a load balancer sends it); every message is
    answered once, in order; idle workers use (almost) no CPU."""
    users = [new_user_id() for _ in range(12)]
    env = environment(postgres_database, fake)
    with ExitStack() as processes:
        hooks: list[Webhooks] = []
        webs: list[subprocess.Popen[bytes]] = []
        for _ in range(2):
            port = free_port()
            web = processes.enter_context(
                yarigai("serve", "--port", str(port), "--no-worker", env=env, cwd=tmp_path)
            )
            wait_healthy(web, f"http://127.0.0.1:{port}", within=60)
            webs.append(web)
            hooks.append(Webhooks(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", fake=fake))
        workers = [
            processes.enter_context(yarigai("worker", "--nice", "0", env=env, cwd=tmp_path))
            for _ in range(3)
        ]

        def via(index: int) -> Webhooks:
            return hooks[index % len(hooks)]

        await asyncio.gather(*(via(i).send(via(i).follow(user)) for i, user in enumerate(users)))
        await until(lambda: all(len(replies(fake, u)) >= 1 for u in users), within=60)
        workers[0].send_signal(signal.SIGKILL)  # the leases it held lapse in 10 s
        webs[1].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        webs[1].wait(10)
        hooks = hooks[:1]  # the load balancer's view: one web process left
        answers = await asyncio.gather(
            *(via(i).send(via(i).text(user, "経理です")) for i, user in enumerate(users))
        )
        assert all(answer.status_code == 200 for answer in answers)
        await until(lambda: all(len(replies(fake, u)) >= 2 for u in users), within=60)
        await asyncio.sleep(1.0)
        # Idle now: the two workers left wait on LISTEN, not on a polling loop.
        before = [cpu_seconds(p.pid) for p in workers[1:]]
        await asyncio.sleep(3.0)
        used = [cpu_seconds(p.pid) - b for p, b in zip(workers[1:], before, strict=True)]
        assert max(used) < 0.08, used  # polling every 50 ms alone costs ~0.12 s
    conversations = {tuple(replies(fake, user)) for user in users}
    assert len(conversations) == 1, {user[-6:]: replies(fake, user) for user in users}
    [(greeting, answer)] = conversations
    assert greeting != answer
    assert fake.invalid == []


def replies(fake: FakeLineApi, user: str) -> list[tuple[str, ...]]:
    """The texts of each reply `user` got, reply by reply."""
    by_request: dict[str, list[str]] = {}
    for delivered in fake.seen(user):
        by_request.setdefault(delivered.request_id, []).append(delivered.text)
    return [tuple(texts) for texts in by_request.values()]


async def test_a_worker_waits_for_a_burst_of_the_servers_webhooks_then_goes_ahead(
    tmp_path: Path,
) -> None:
    board = SharedMoment.create(tmp_path / "foreground")
    server = Foreground(publish=board)
    worker = Foreground(watch=SharedMoment(tmp_path / "foreground"), patience=5.0)

    with ExitStack() as requests:
        for _ in range(BUSY_AT - 1):
            requests.enter_context(server.serving())
        assert board.get() == (BUSY_AT - 1, 0.0)  # a steady stream is no burst
        await asyncio.wait_for(worker.step_aside(), 0.5)
        requests.enter_context(server.serving())
        assert board.get()[0] == BUSY_AT
        waiting = asyncio.create_task(worker.step_aside())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # a burst is going on in the other process
    # Over: the worker goes ahead a moment later (the burst may resume right away).
    left = time.monotonic()
    await asyncio.wait_for(waiting, 1.0)
    assert HOLD * 0.5 <= time.monotonic() - left < 1.0

    patient = Foreground(watch=SharedMoment(tmp_path / "foreground"), patience=0.2)
    with ExitStack() as requests:
        for _ in range(BUSY_AT):
            requests.enter_context(server.serving())
        started = time.monotonic()
        await patient.step_aside()  # never longer than its patience
        assert 0.15 < time.monotonic() - started < 2.0
