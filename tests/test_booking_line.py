"""Booking from LINE: signed webhooks into the real app under uvicorn, replies to a fake LINE
API that checks every request against LINE's OpenAPI spec. The user finishes the advice,
gives contact details, books, reschedules and cancels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agent_app import TUESDAY_10_JST, password_hash
from career_path import TURNS
from fakes.clock import FakeClock
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
)
from fakes.served import serving_app
from test_booking_web import SETTINGS

from bot.booking.slots import parse_rule
from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.config import Settings
from bot.http.app import create_app
from bot.store import AgentStore
from bot.wiring import Runtime


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TUESDAY_10_JST)


@pytest.fixture
async def served(
    tmp_path: Path, fake: FakeLineApi, clock: FakeClock
) -> AsyncIterator[tuple[str, Runtime]]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        line_channel_secret=CHANNEL_SECRET,
        line_channel_access_token=ACCESS_TOKEN,
        line_api_base_url=fake.url,
        session_secret="test",
        **{**SETTINGS, "meeting_method": "line"},
    )
    app = create_app(settings, channels=[LineChannel(retry_delays=(0.02, 0.05))], clock=clock)
    async with serving_app(app) as url:
        runtime: Runtime = app.state.runtime
        agent = await AgentStore(engine=runtime.store.engine).add(
            "sato", password_hash=password_hash(), display_name="佐藤"
        )
        for day, hours in (("Tue", "18:00-20:00"), ("Sat", "10:00-11:00")):
            await runtime.booking.bookings.add_rule(
                "sato", parse_rule(agent.id, "weekly", day, hours)
            )
        yield url, runtime


async def test_a_line_user_books_reschedules_and_cancels(
    served: tuple[str, Runtime], fake: FakeLineApi, clock: FakeClock
) -> None:
    url, runtime = served
    hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
    user = new_user_id()

    async def send(event: dict[str, object]) -> None:
        assert (await hooks.send(event)).status_code == 200
        await runtime.worker.idle()

    async def tap(label: str) -> None:
        await send(hooks.tap(user, fake.last(user).button(label)))

    async def say(text: str) -> None:
        await send(hooks.text(user, text))

    def said_since(count: int) -> str:
        return "\n".join(fake.texts(user)[count:])

    await send(hooks.follow(user))
    for kind, value in TURNS:
        await (tap(value) if kind == "tap" else say(value))
    assert any("あなたのやりがい相談まとめ" in t for t in fake.texts(user))
    await tap("面談を予約する")
    await say("山田花子")
    await tap("電話")
    await say("090-1234-5678")
    assert "https://example.jp/privacy" in fake.last(user).text
    await tap("同意して登録")
    assert [b["label"] for b in fake.last(user).buttons][:3] == [
        "4/1（火）18:00",
        "4/1（火）18:30",
        "4/5（土）10:00",
    ]
    before = len(fake.texts(user))
    await tap("4/1（火）18:00")
    confirmation = said_since(before)
    assert "ご予約を承りました" in confirmation and "4月1日（火）18:00〜18:30" in confirmation
    assert "LINE通話" in confirmation and "https://bot.example.jp/bookings/" in confirmation

    # An hour before, the reminder is pushed (no reply token lives that long).
    clock.set(datetime(2025, 4, 1, 8, 0, tzinfo=UTC))  # 17:00 JST
    assert await runtime.timers.run_due() == 1
    await runtime.worker.idle()
    reminded = fake.last(user)
    assert reminded.via == "push" and reminded.text.startswith("まもなく面談のお時間です。")
    assert "このトークにお電話しますね" in reminded.text

    await say("面談を予約")
    await tap("日時を変更する")
    before = len(fake.texts(user))
    await tap("4/5（土）10:00")
    assert "4月5日（土）10:00〜10:30" in said_since(before)

    # Cancelled before its reminders: none is ever sent.
    await say("予約をキャンセルしたい")
    await tap("キャンセルする")
    before = len(fake.texts(user))
    await tap("キャンセルする")
    assert "面談をキャンセルしました" in said_since(before)
    seen = len(fake.seen(user))
    clock.set(datetime(2025, 4, 5, 1, 0, tzinfo=UTC))  # the Saturday booking's start
    assert await runtime.timers.run_due() == 0
    await runtime.worker.idle()
    assert len(fake.seen(user)) == seen
    kept = await runtime.booking.bookings.between(
        TUESDAY_10_JST, TUESDAY_10_JST + timedelta(days=14)
    )
    assert [(b.status, b.key.channel.value) for b in kept] == [
        ("cancelled", "line"),
        ("cancelled", "line"),
    ]
