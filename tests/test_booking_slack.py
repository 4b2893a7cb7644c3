"""Booking from a Slack DM through the real app and the fake Slack API: the user finishes the
advice, books, reschedules and cancels; the agent channel shows a card per booking, updated
with chat.update when the booking moves or is cancelled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agent_app import TUESDAY_10_JST, agent_app
from career_path import TURNS
from fakes.clock import FakeClock
from fakes.slack_api import BOT_ID, FakeSlackApi, Posted, SlackEvents
from test_booking_web import SETTINGS
from test_slack_agents import AGENTS, SIGNING_SECRET, USER, AgentChannel, slack_settings


@pytest.fixture
def api() -> Iterator[FakeSlackApi]:
    with FakeSlackApi(users={USER: {"name": "hanako", "real_name": "山田花子"}}) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TUESDAY_10_JST)


@pytest.fixture
def slack(tmp_path: Path, api: FakeSlackApi, clock: FakeClock) -> Iterator[AgentChannel]:
    settings = {**slack_settings(api), **SETTINGS, "public_url": "https://bot.example.jp"}
    with agent_app(tmp_path, runtime_clock=clock, **settings) as app:
        app.desk.clock = clock.now
        app.add_agent("sato", "佐藤")
        for day, start, minutes in (("Tue", "18:00", 120), ("Sat", "10:00", 60)):
            added = app.client.post(
                "/api/v1/availability",
                json={"kind": "weekly", "day": day, "start": start, "minutes": minutes},
                headers=app.api("sato"),
            )
            assert added.status_code == 201, added.text
        yield AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))


def bot_dms(slack: AgentChannel) -> list[Posted]:
    return [m for m in slack.api.dm(USER) if m.bot_id == BOT_ID]


def tap(slack: AgentChannel, label: str) -> None:
    """Click `label` on the newest bot message in the DM that has it."""
    message = next(
        m
        for m in reversed(bot_dms(slack))
        if any(b["text"]["text"].removeprefix("✓ ") == label for b in m.buttons())
    )
    slack.post(slack.events.block_actions(USER, message, message.button(label)), form=True)


def said_since(slack: AgentChannel, count: int) -> str:
    return "\n".join(m.shown_text() for m in bot_dms(slack)[count:])


def booking_cards(slack: AgentChannel) -> list[Posted]:
    return [m for m in slack.cards() if "面談の予約 #" in m.shown_text()]


def test_a_slack_user_books_reschedules_and_cancels(slack: AgentChannel, clock: FakeClock) -> None:
    for kind, value in TURNS:
        if kind == "tap":
            tap(slack, value)
        else:
            slack.dm(value)
    assert "あなたのやりがい相談まとめ" in said_since(slack, 0)
    tap(slack, "面談を予約する")
    slack.dm("山田花子")
    tap(slack, "このチャットで")
    tap(slack, "同意して登録")
    before = len(bot_dms(slack))
    tap(slack, "4/1（火）18:30")
    confirmation = said_since(slack, before)
    assert "ご予約を承りました" in confirmation and "4月1日（火）18:30〜19:00" in confirmation
    assert "https://bot.example.jp/bookings/" in confirmation

    # The reminder an hour before comes as a DM.
    before = len(bot_dms(slack))
    clock.set(datetime(2025, 4, 1, 8, 30, tzinfo=UTC))  # 17:30 JST
    assert slack.app.run(slack.app.runtime.timers.run_due) == 1
    slack.app.settle()
    assert said_since(slack, before).startswith(
        "まもなく面談のお時間です。4月1日（火）18:30〜19:00"
    )

    [card] = booking_cards(slack)
    assert card.channel == AGENTS
    shown = card.shown_text()
    assert "4月1日（火）18:30〜19:00" in shown and "佐藤" in shown and "山田花子" in shown
    assert "予約済み" in shown and "*Slack* のユーザー" in shown
    assert "*連絡先:* このチャットで" in shown

    slack.dm("面談を予約")
    tap(slack, "日時を変更する")
    before = len(bot_dms(slack))
    tap(slack, "4/5（土）10:00")
    assert "4月5日（土）10:00〜10:30" in said_since(slack, before)
    first, second = booking_cards(slack)
    assert first.ts == card.ts and first.edits == 1  # chat.update on the card agents saw
    assert "キャンセルされました" in first.shown_text()
    assert "4月5日（土）10:00〜10:30" in second.shown_text() and "予約済み" in second.shown_text()

    slack.dm("面談を予約")
    tap(slack, "キャンセルする")
    before = len(bot_dms(slack))
    tap(slack, "キャンセルする")
    assert "面談をキャンセルしました" in said_since(slack, before)
    first, second = booking_cards(slack)
    assert second.edits == 1 and "キャンセルされました" in second.shown_text()
    updates = [c.args for c in slack.api.calls_to("chat.update") if c.args["channel"] == AGENTS]
    assert [u["ts"] for u in updates] == [first.ts, second.ts]
