"""Durable timers across real processes: a timer scheduled before a kill -9 fires once after
the restart (SQLite); with two workers on PostgreSQL, one killed, each timer fires once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.line_api import FakeLineApi, Webhooks, new_user_id, require_spec
from fakes.processes import free_port, wait_healthy
from test_worker_process import environment, until, yarigai

from bot.channels.line.adapter import WEBHOOK_PATH
from bot.core.timers import schedule_say
from bot.models import Channel, ConversationKey, TextOut
from bot.store import SqlStore

NUDGE = "その後いかがですか？"


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api


async def schedule(database_url: str, users: list[str], due_in: float) -> None:
    store = await SqlStore.open(database_url)
    try:
        due = datetime.now(UTC) + timedelta(seconds=due_in)
        for user in users:
            stored = await store.load(ConversationKey(channel=Channel.LINE, address=user))
            assert stored is not None
            await schedule_say(
                store,
                f"test:{user}",
                conversation_id=stored.id,
                due_at=due,
                messages=[TextOut(text=NUDGE)],
            )
    finally:
        await store.close()


def nudges(fake: FakeLineApi, user: str) -> int:
    return fake.texts(user).count(NUDGE)


async def test_a_timer_outlives_a_killed_server_and_fires_once(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    user = new_user_id()
    database = f"sqlite:///{tmp_path / 'bot.db'}"
    env = {**environment(database, fake), "WORKER_MODE": "inline"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with yarigai("serve", "--port", str(port), env=env, cwd=tmp_path) as server:
        wait_healthy(server, url)
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        assert (await hooks.send(hooks.follow(user))).status_code == 200
        await until(lambda: bool(fake.seen(user)))
        await schedule(database, [user], due_in=2.0)
        server.send_signal(signal.SIGKILL)  # nothing of the timer is in its memory anyway
        server.wait(10)
    await asyncio.sleep(2.5)  # due while nobody runs
    assert nudges(fake, user) == 0
    with yarigai("serve", "--port", str(port), env=env, cwd=tmp_path) as server:
        wait_healthy(server, url)
        await until(lambda: nudges(fake, user) == 1, within=20)
        await asyncio.sleep(6.0)  # past the next looks for due timers
        assert nudges(fake, user) == 1
    [pushed] = [d for d in fake.seen(user) if d.text == NUDGE]
    assert pushed.via == "push"
    assert fake.invalid == []


async def test_workers_on_postgresql_fire_each_timer_once_when_one_is_killed(
    fake: FakeLineApi, tmp_path: Path, postgres_database: str
) -> None:
    users = [new_user_id() for _ in range(6)]
    env = environment(postgres_database, fake)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with yarigai("serve", "--port", str(port), "--no-worker", env=env, cwd=tmp_path) as web:
        wait_healthy(web, url, within=60)
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        with (
            yarigai("worker", "--nice", "0", env=env, cwd=tmp_path) as first,
            yarigai("worker", "--nice", "0", env=env, cwd=tmp_path),
        ):
            for user in users:
                assert (await hooks.send(hooks.follow(user))).status_code == 200
            await until(lambda: all(fake.seen(u) for u in users), within=60)
            await schedule(postgres_database, users, due_in=1.0)
            first.send_signal(signal.SIGKILL)  # it may hold the jobs' lease: that lapses
            first.wait(10)
            await until(lambda: all(nudges(fake, u) >= 1 for u in users), within=60)
            await asyncio.sleep(6.0)
    assert {user: nudges(fake, user) for user in users} == {user: 1 for user in users}
    assert fake.invalid == []
