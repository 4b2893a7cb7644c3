"""Durable timers run by the background jobs: a due timer's messages reach a LINE user by push
(through the outbox) and a web user in the chat's history, once; not before they are due, not
when cancelled, not to a user who left; on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes.clock import FakeClock
from fakes.line_api import FakeLineApi, Webhooks, new_user_id, require_spec
from fakes.served import serving_app
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_line import FAST_RETRIES, line_settings, until

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.config import Settings
from bot.core.timers import schedule_say
from bot.http.app import create_app
from bot.models import Channel, ConversationKey, TextOut
from bot.store.schema import conversations
from bot.wiring import Runtime

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Served:
    app: FastAPI
    fake: FakeLineApi
    hooks: Webhooks
    clock: FakeClock

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def follow(self, user: str) -> int:
        """A new LINE friend, greeted; their conversation's id."""
        answer = await self.hooks.send(self.hooks.follow(user))
        assert answer.status_code == 200
        await self.runtime.worker.idle()
        await until(lambda: bool(self.fake.seen(user)))
        stored = await self.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
        assert stored is not None
        return stored.id


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
async def served(tmp_path: Path, fake: FakeLineApi) -> AsyncIterator[Served]:
    clock = FakeClock()
    settings = line_settings(tmp_path / "db.sqlite", fake)
    app = create_app(
        settings,
        channels=[LineChannel(retry_delays=FAST_RETRIES, loading_after=None)],
        clock=clock,
    )
    async with serving_app(app) as url:
        yield Served(app=app, fake=fake, hooks=Webhooks(url + WEBHOOK_PATH, fake=fake), clock=clock)


async def test_a_due_timer_is_pushed_once_through_the_outbox(served: Served) -> None:
    user = new_user_id()
    cid = await served.follow(user)
    before = len(served.fake.seen(user))
    runtime, clock = served.runtime, served.clock
    await schedule_say(
        runtime.store,
        f"test:{cid}",
        conversation_id=cid,
        due_at=clock.now() + timedelta(days=3),
        messages=[TextOut(text="その後いかがですか？")],
    )

    assert await runtime.timers.run_due() == 0  # not due yet
    clock.advance(timedelta(days=3))
    # Two passes at once (as two processes whose lease changed hands mid-pass): one message.
    await asyncio.gather(runtime.timers.run_due(), runtime.timers.run_due())
    await until(lambda: len(served.fake.seen(user)) > before)
    await asyncio.sleep(0.3)
    [pushed] = served.fake.seen(user)[before:]
    assert pushed.via == "push" and pushed.text == "その後いかがですか？"
    [push] = [c for c in served.fake.calls_of("push") if c.body["to"] == user]
    assert push.retry_key  # a retried push is never shown twice
    transcript = await runtime.store.transcript(cid)
    assert transcript[-1].text == "その後いかがですか？" and transcript[-1].sender == "bot"
    timer = await runtime.store.timer(f"test:{cid}")
    assert timer is not None and timer.outcome == "sent"
    assert await runtime.timers.run_due() == 0


async def test_cancelled_and_left_users_timers_say_nothing(served: Served) -> None:
    runtime, clock = served.runtime, served.clock
    stays, leaves = new_user_id(), new_user_id()
    stays_id, leaves_id = await served.follow(stays), await served.follow(leaves)
    due = clock.now() + timedelta(hours=1)
    for cid in (stays_id, leaves_id):
        await schedule_say(
            runtime.store,
            f"test:{cid}",
            conversation_id=cid,
            due_at=due,
            messages=[TextOut(text="リマインドです")],
        )
    assert await runtime.store.cancel_timer(f"test:{stays_id}")
    await served.hooks.send(served.hooks.unfollow(leaves))
    await runtime.worker.idle()
    seen = {user: len(served.fake.seen(user)) for user in (stays, leaves)}

    clock.advance(timedelta(hours=2))
    assert await runtime.timers.run_due() == 1  # the left user's, skipped
    await asyncio.sleep(0.3)
    assert {user: len(served.fake.seen(user)) for user in (stays, leaves)} == seen
    skipped = await runtime.store.timer(f"test:{leaves_id}")
    assert skipped is not None and skipped.outcome == "skipped: user left"


async def test_a_timer_reaches_the_web_chat_history(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=REPO / "flows",
        default_flow="career",
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        session = client.post("/api/chat/sessions", json={}).json()["session"]
        url = f"/api/chat/sessions/{session}/messages"
        last = client.post(url, json={"text": "経理です"}).json()["last_id"]
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]

        async def schedule() -> None:
            async with runtime.store.engine.connect() as connection:
                cid = await connection.scalar(
                    sa.select(conversations.c.id).where(conversations.c.channel == "web")
                )
            await schedule_say(
                runtime.store,
                "web-test",
                conversation_id=cid,
                due_at=clock.now() + timedelta(minutes=5),
                messages=[TextOut(text="おかえりなさい")],
            )

        client.portal.call(schedule)  # type: ignore[union-attr]
        clock.advance(timedelta(minutes=5))
        assert client.portal.call(runtime.timers.run_due) == 1  # type: ignore[union-attr]
        history = client.get(url, params={"after": last}).json()
        assert [m.get("text") for m in history["messages"]] == ["おかえりなさい"]


async def test_a_say_timer_may_wait_for_the_end_of_quiet_hours(served: Served) -> None:
    user = new_user_id()
    cid = await served.follow(user)
    runtime, clock = served.runtime, served.clock
    late = datetime(2026, 12, 7, 13, 30, tzinfo=UTC)  # 22:30 in Tokyo
    clock.set(late)
    for name, quiet in (("polite", True), ("plain", False)):
        await schedule_say(
            runtime.store,
            f"test:{cid}:{name}",
            conversation_id=cid,
            due_at=late,
            messages=[TextOut(text=f"{name}です")],
            quiet_hours=quiet,
        )
    assert await runtime.timers.run_due() == 2
    await until(lambda: "plainです" in served.fake.texts(user))
    polite = await runtime.store.timer(f"test:{cid}:polite")
    assert polite is not None and polite.pending
    assert polite.due_at == datetime(2026, 12, 8, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    clock.set(polite.due_at)
    assert await runtime.timers.run_due() == 1
    await until(lambda: "politeです" in served.fake.texts(user))
