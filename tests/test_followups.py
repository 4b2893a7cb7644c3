"""The flow's follow-ups, end to end on a fake clock: a LINE user who asks for one at the end of
the advice gets it by push three days later (and it is a real question they can answer); not in
quiet hours (it waits for the morning), not after 「配信停止」, not while with an agent, not after
leaving; 「配信再開」 schedules one again; Slack users get it in their DM, web users in the chat's
history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.clock import FakeClock
from fakes.line_api import FakeLineApi, Webhooks, new_user_id, require_spec
from fakes.served import serving_app
from fakes.slack_api import FakeSlackApi, SlackEvents, dm_channel
from fastapi.testclient import TestClient
from test_line import FAST_RETRIES, line_settings, until
from test_slack import USER, SlackWorld, settings_for, texts
from test_timers import Served

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.config import Settings
from bot.http.app import create_app
from bot.models import Channel, ConversationKey
from bot.store import AgentStore
from bot.wiring import Runtime

REPO = Path(__file__).resolve().parents[1]
NOON_JST = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # a Monday, 12:00 in Tokyo
LATE_JST = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)  # 22:00 in Tokyo: quiet hours
BOKI = "簿記の勉強、始められそうですか？"
CHECKIN = "その後、お仕事の小さな工夫は試せましたか？"


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_JST)


@pytest.fixture
async def served(tmp_path: Path, fake: FakeLineApi, clock: FakeClock) -> AsyncIterator[Served]:
    settings = line_settings(tmp_path / "db.sqlite", fake)
    app = create_app(
        settings,
        channels=[LineChannel(retry_delays=FAST_RETRIES, loading_after=None)],
        clock=clock,
    )
    async with serving_app(app) as url:
        yield Served(app=app, fake=fake, hooks=Webhooks(url + WEBHOOK_PATH, fake=fake), clock=clock)


async def send(served: Served, event: dict[str, object]) -> None:
    answer = await served.hooks.send(event)
    assert answer.status_code == 200
    await served.runtime.worker.idle()


async def tap(served: Served, user: str, label: str) -> None:
    await send(served, served.hooks.tap(user, served.fake.last(user).button(label)))


async def say(served: Served, user: str, text: str) -> None:
    await send(served, served.hooks.text(user, text))


async def finish_advice(served: Served, user: str) -> int:
    """A 経理 stayer interested in 簿記, through to the summary; the conversation's id."""
    await send(served, served.hooks.follow(user))
    await tap(served, user, "経理")
    await say(served, user, "毎日おなじことの繰り返しでつまんない")
    await tap(served, user, "これで全部")
    for answer in ["当てはまらない", "当てはまる", "当てはまらない", "当てはまる"] * 2:
        await tap(served, user, answer)
    await tap(served, user, "今の職場で工夫したい")
    await say(served, user, "マクロやってみたい、できそう")
    await say(served, user, "簿記2級とりたい")
    await say(served, user, "ちょっと安心した")
    assert "3日後に様子を聞いて" in [b["label"] for b in served.fake.last(user).buttons]
    stored = await served.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None and stored.state.state == "summary"
    return stored.id


async def run_timers(served: Served) -> int:
    done = await served.runtime.timers.run_due()
    await served.runtime.worker.idle()
    return done


async def test_an_opted_in_user_gets_the_follow_up_by_push_three_days_later(
    served: Served,
) -> None:
    user = new_user_id()
    cid = await finish_advice(served, user)
    await tap(served, user, "3日後に様子を聞いて")
    assert "3日後くらいに、こちらからひと声かけますね" in "".join(served.fake.texts(user)[-3:])
    timer = await served.runtime.store.timer(f"followup:{cid}:boki_check")
    assert timer is not None and timer.due_at == NOON_JST + timedelta(days=3)
    assert await served.runtime.store.timer(f"followup:{cid}:checkin") is None  # not for 簿記 fans
    seen = len(served.fake.seen(user))

    served.clock.advance(timedelta(days=2, hours=23))
    assert await run_timers(served) == 0
    served.clock.advance(timedelta(hours=1))
    assert await run_timers(served) == 1
    await until(lambda: len(served.fake.seen(user)) > seen)
    [asked] = served.fake.seen(user)[seen:]
    assert asked.via == "push" and asked.text.endswith(BOKI)
    assert [b["label"] for b in asked.buttons] == [
        "もう始めました",
        "これから始めます",
        "迷っています",
    ]

    # A real question: the answer is a turn like any other, answered by reply.
    await tap(served, user, "もう始めました")
    assert "大きな一歩です" in "".join(served.fake.texts(user)[-2:])
    assert served.fake.seen(user)[-1].via == "reply"
    assert await run_timers(served) == 0  # once


async def test_a_follow_up_due_in_quiet_hours_waits_for_the_morning(
    served: Served, clock: FakeClock
) -> None:
    clock.set(LATE_JST)
    user = new_user_id()
    cid = await finish_advice(served, user)
    await tap(served, user, "3日後に様子を聞いて")
    seen = len(served.fake.seen(user))

    clock.advance(timedelta(days=3))  # 22:00 in Tokyo
    assert await run_timers(served) == 1  # postponed
    timer = await served.runtime.store.timer(f"followup:{cid}:boki_check")
    morning = datetime(2026, 12, 11, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert timer is not None and timer.pending and timer.due_at == morning
    clock.set(morning - timedelta(minutes=1))
    assert await run_timers(served) == 0
    assert len(served.fake.seen(user)) == seen

    clock.set(morning)
    assert await run_timers(served) == 1
    await until(lambda: len(served.fake.seen(user)) > seen)
    assert served.fake.last(user).text.endswith(BOKI)


async def test_unsubscribed_agent_mode_and_left_users_get_none(served: Served) -> None:
    stopped, with_agent, left = new_user_id(), new_user_id(), new_user_id()
    ids = {}
    for user in (stopped, with_agent, left):
        ids[user] = await finish_advice(served, user)
        await tap(served, user, "3日後に様子を聞いて")
    await say(served, stopped, "配信停止")
    assert "メッセージを止めました" in served.fake.last(stopped).text
    await say(served, with_agent, "担当者と話したい")
    await send(served, served.hooks.unfollow(left))
    seen = {user: len(served.fake.seen(user)) for user in ids}

    served.clock.advance(timedelta(days=3))
    assert await run_timers(served) == 3
    outcomes = {}
    for user, cid in ids.items():
        timer = await served.runtime.store.timer(f"followup:{cid}:boki_check")
        assert timer is not None
        outcomes[user] = timer.outcome
    assert outcomes == {
        stopped: "skipped: not wanted",
        with_agent: "skipped: with an agent",
        left: "skipped: user left",
    }
    assert {user: len(served.fake.seen(user)) for user in ids} == seen

    # 「配信再開」 works in any state and schedules a check-in three days on.
    await say(served, stopped, "配信再開")
    assert "配信を再開しました" in served.fake.last(stopped).text
    served.clock.advance(timedelta(days=3))
    assert await run_timers(served) == 1
    await until(lambda: served.fake.last(stopped).text.endswith(CHECKIN))


def test_a_slack_user_gets_the_follow_up_in_their_dm(tmp_path: Path) -> None:
    clock = FakeClock(NOON_JST)
    with (
        FakeSlackApi(users={USER: {"name": "hanako", "real_name": "山田花子"}}) as api,
        TestClient(create_app(settings_for(tmp_path, api, flow="career"), clock=clock)) as client,
    ):
        from test_slack import SIGNING_SECRET

        slack = SlackWorld(client=client, api=api, events=SlackEvents(SIGNING_SECRET))
        slack.dm("こんにちは")
        slack.dm("配信再開")
        assert "配信を再開しました" in texts(api.dm(USER))[-2]
        clock.advance(timedelta(days=3))
        assert slack.run(slack.runtime.timers.run_due) == 1
        slack.idle()
        question = slack.question(dm_channel(USER))
        assert CHECKIN in question.text
        assert [b["text"]["text"] for b in question.buttons()] == [
            "試してみました",
            "まだこれから",
            "迷っています",
        ]
        slack.click("まだこれから")
        assert "焦らなくていいですよ" in "\n".join(texts(api.dm(USER)))


def test_a_web_user_finds_the_follow_up_in_the_chat_history(tmp_path: Path) -> None:
    clock = FakeClock(NOON_JST)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=REPO / "flows",
        default_flow="career",
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        session = client.post("/api/chat/sessions", json={}).json()["session"]
        url = f"/api/chat/sessions/{session}/messages"
        last = client.post(url, json={"text": "配信再開"}).json()["last_id"]
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        clock.advance(timedelta(days=3))
        assert client.portal.call(runtime.timers.run_due) == 1  # type: ignore[union-attr]
        history = client.get(url, params={"after": last}).json()
        [question] = history["messages"]
        assert question["text"].endswith(CHECKIN)
        assert [c["label"] for c in question["choices"]] == [
            "試してみました",
            "まだこれから",
            "迷っています",
        ]
        reply = client.post(
            url, json={"choice": "unsure", "state": question["state"], "label": "迷っています"}
        ).json()
        assert "真剣に考えている証拠です" in reply["messages"][0]["text"]


async def test_none_while_a_booking_is_still_to_come(served: Served) -> None:
    """Booked users hear from their agent; once the meeting is past, the follow-up may go."""
    agent = await AgentStore(engine=served.runtime.store.engine).add(
        "sato", password_hash="x", display_name="佐藤"
    )
    bookings = served.runtime.booking.bookings
    waiting, met = new_user_id(), new_user_id()
    ids = {}
    for user, days in ((waiting, 5), (met, 1)):
        ids[user] = await finish_advice(served, user)
        await tap(served, user, "3日後に様子を聞いて")
        starts = NOON_JST + timedelta(days=days, hours=7)  # 19:00 in Tokyo
        await bookings.book(
            ids[user],
            agent_id=agent.id,
            starts_at=starts,
            ends_at=starts + timedelta(minutes=30),
            now=NOON_JST,
        )
    seen = {user: len(served.fake.seen(user)) for user in ids}

    served.clock.advance(timedelta(days=3))
    assert await run_timers(served) == 2
    skipped = await served.runtime.store.timer(f"followup:{ids[waiting]}:boki_check")
    assert skipped is not None and skipped.outcome == "skipped: booking pending"
    await until(lambda: len(served.fake.seen(met)) > seen[met])
    assert served.fake.last(met).text.endswith(BOKI)
    assert len(served.fake.seen(waiting)) == seen[waiting]
