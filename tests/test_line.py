"""LINE end to end: the real app under uvicorn on 127.0.0.1, signed webhooks in, and the official
SDK talking HTTP to a fake LINE API that checks every request against LINE's OpenAPI spec."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
    sign,
)
from fakes.processes import free_port, wait_healthy
from fakes.served import serving_app
from fastapi import FastAPI

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.channels.line.webhook import parse
from bot.config import Settings
from bot.core.jobs import JobsTuning
from bot.core.outbox import OutboxTuning
from bot.core.service import ASK_FOR_BUTTON, GROUP_NOTE
from bot.errors import DeliveryFailed
from bot.http.app import create_app
from bot.models import Channel, ConversationKey, Mode, StartIn, Status, TextOut
from bot.store import SqlStore
from bot.store.schema import inbox, outbox
from bot.wiring import Runtime, build

REPO = Path(__file__).resolve().parents[1]
FAST_RETRIES = (0.02, 0.05)


@dataclass
class Bot:
    """The app under test, served for real, and LINE's two sides."""

    app: FastAPI
    url: str
    fake: FakeLineApi
    hooks: Webhooks

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def send(self, *events: dict[str, Any], redelivery: bool = False) -> None:
        """Post as LINE does and wait until the bot has acted on it."""
        answer = await self.hooks.send(*events, redelivery=redelivery)
        assert answer.status_code == 200, answer.text
        await self.settle()

    async def settle(self) -> None:
        await self.runtime.worker.idle()

    async def tap(self, user: str, label: str) -> None:
        await self.send(self.hooks.tap(user, self.fake.last(user).button(label)))

    async def say(self, user: str, text: str) -> None:
        await self.send(self.hooks.text(user, text))


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        # Whatever a test did, the bot never sent LINE anything outside the spec.
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
def settings(tmp_path: Path, fake: FakeLineApi) -> Settings:
    return line_settings(tmp_path / "db.sqlite", fake)


@dataclass
class Tuned:
    """How the next app a test serves is tuned (`plugin` chooses, `serving` builds)."""

    line: LineChannel
    outbox: OutboxTuning = field(default_factory=OutboxTuning)
    jobs: JobsTuning = field(default_factory=JobsTuning)


_OUTBOX_KEYS = frozenset({"sweep_every", "orphan_after", "catch_up_first", "catch_up_most"})
_tuned = Tuned(line=LineChannel(retry_delays=FAST_RETRIES, loading_after=None))


@pytest.fixture
def plugin() -> Iterator[Callable[..., LineChannel]]:
    """Tune the apps the test serves (fast retries by default), by argument to create_app."""
    global _tuned

    def use(**tuning: Any) -> LineChannel:
        global _tuned
        outbox = {k: v for k, v in tuning.items() if k in _OUTBOX_KEYS}
        jobs = {k: v for k, v in tuning.items() if k == "purge_every"}
        line = {k: v for k, v in tuning.items() if k not in _OUTBOX_KEYS and k != "purge_every"}
        channel = LineChannel(**{"retry_delays": FAST_RETRIES, **line})
        _tuned = Tuned(line=channel, outbox=OutboxTuning(**outbox), jobs=JobsTuning(**jobs))
        return channel

    use(loading_after=None)
    yield use
    _tuned = Tuned(line=LineChannel(retry_delays=FAST_RETRIES, loading_after=None))


@pytest.fixture
async def bot(
    settings: Settings, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> AsyncIterator[Bot]:
    async with serving(settings, fake) as served:
        yield served


def line_settings(database: Path, fake: FakeLineApi, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{database}",
        "flows_dir": REPO / "flows",
        "default_flow": "career",
        "line_channel_secret": CHANNEL_SECRET,
        "line_channel_access_token": ACCESS_TOKEN,
        "line_api_base_url": fake.url,
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def serving(settings: Settings, fake: FakeLineApi) -> AsyncIterator[Bot]:
    """The app under uvicorn on a free port of 127.0.0.1, in this event loop."""
    app = create_app(settings, channels=[_tuned.line], outbox=_tuned.outbox, jobs=_tuned.jobs)
    async with serving_app(app) as url:
        yield Bot(app=app, url=url, fake=fake, hooks=Webhooks(url + WEBHOOK_PATH, fake=fake))


async def until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], within: float = 5.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def rows(store: SqlStore, table: sa.Table) -> list[dict[str, Any]]:
    async with store.engine.connect() as connection:
        result = await connection.execute(sa.select(table).order_by(table.c.id))
        return [dict(row._mapping) for row in result]


# ------------------------------------------------------------ the conversation


async def test_whole_career_conversation_with_quick_replies_and_free_text(bot: Bot) -> None:
    fake, user = bot.fake, new_user_id()
    await bot.send(bot.hooks.follow(user))
    assert "やりがい相談です" in fake.texts(user)[0]
    question = fake.last(user)
    assert question.text == "まず、いまのお仕事を教えてください。"
    assert [b["label"] for b in question.buttons] == ["経理", "人事", "総務", "一般事務", "その他"]
    # The user's own bubble shows the label: the tap carries it as displayText.
    assert all(b["type"] == "postback" and b["displayText"] == b["label"] for b in question.buttons)

    await bot.tap(user, "経理")
    assert "経理なんですね" in fake.texts(user)[-2]
    await bot.say(user, "毎日おなじことの繰り返しでつまんない")
    picked = fake.last(user)
    assert "いま選んでいるのは「毎日同じことの繰り返し」です" in picked.text
    assert "✓ 毎日同じことの繰り返し" in [b["label"] for b in picked.buttons]
    assert picked.buttons[-1]["label"] == "これで全部"

    await bot.tap(user, "これで全部")
    reasons = [d for d in fake.seen(user) if d.message["type"] == "flex"]
    assert reasons and reasons[0].text.startswith("モヤモヤの理由を整理すると")
    assert fake.last(user).text.startswith("（1/8）")

    await bot.say(user, "ううん、別に")
    await bot.tap(user, "当てはまる")
    await bot.say(user, "そうでもないかな")
    await bot.tap(user, "当てはまる")
    await bot.say(user, "あんまり")
    await bot.tap(user, "当てはまる")
    await bot.tap(user, "当てはまらない")
    await bot.say(user, "まさにそれ")
    assert fake.last(user).text == "これから、どうしていきたいですか？"
    await bot.say(user, "今の会社で工夫してみたい")
    await bot.say(user, "マクロやってみたい、できそう")
    await bot.say(user, "簿記2級とりたい")
    await bot.say(user, "ちょっと安心した")

    summary = [d for d in fake.seen(user) if d.text.startswith("あなたのやりがい相談まとめ")]
    assert len(summary) == 1 and summary[0].message["type"] == "flex"
    assert "日商簿記（2級以上）" in str(summary[0].message["contents"])
    assert [b["label"] for b in fake.last(user).buttons] == [
        "担当者と話したい",
        "面談を予約する",
        "最初からやり直す",
        "終わる",
        "3日後に様子を聞いて",
    ]
    await bot.tap(user, "終わる")
    assert "話してくれてありがとうございました" in "".join(fake.texts(user)[-2:])

    # Every turn was answered with its own reply token: nothing needed a push.
    assert bot.fake.calls_of("push") == []
    assert len(bot.fake.calls_of("reply")) == 17  # one per event sent above
    stored = await bot.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None and stored.state.slots["role"] == "keiri"
    transcript = await bot.runtime.store.transcript(stored.id, limit=500)
    assert "経理" in [line.text for line in transcript if line.direction == "in"]
    assert all(row["status"] == "sent" for row in await rows(bot.runtime.store, outbox))


async def test_redelivery_three_times_gives_one_reply(bot: Bot) -> None:
    user = new_user_id()
    event = bot.hooks.follow(user)
    await bot.send(event)
    await bot.send(event, redelivery=True)
    # ...and duplicates arriving together, as from a retrying network.
    answers = await asyncio.gather(*(bot.hooks.send(event, redelivery=True) for _ in range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    await bot.settle()
    assert len(bot.fake.calls_of("reply")) == 1
    assert len(bot.fake.seen(user)) == 3  # greeting, privacy note, first question
    assert len(await rows(bot.runtime.store, inbox)) == 1


async def test_two_quick_messages_are_answered_in_order(bot: Bot) -> None:
    user = new_user_id()
    await bot.send(bot.hooks.follow(user))
    first, second = bot.hooks.text(user, "経理です"), bot.hooks.text(user, "ヘルプ")
    # The first answer is slow to reach LINE; the second, acknowledged meanwhile, waits for it.
    bot.fake.slow("reply", 0.3)
    assert (await bot.hooks.send(first)).status_code == 200
    await until(lambda: bot.fake.holding == 1)  # the first reply is on its way
    assert (await bot.hooks.send(second)).status_code == 200
    await bot.settle()
    said = bot.fake.texts(user)
    role = next(i for i, t in enumerate(said) if "経理なんですね" in t)
    help_ = next(i for i, t in enumerate(said) if "ボタンをタップするか" in t)
    assert role < help_


async def test_events_in_one_body_run_oldest_first(bot: Bot) -> None:
    user = new_user_id()
    follow, text = bot.hooks.follow(user), bot.hooks.text(user, "人事です")
    await bot.send(text, follow)  # listed out of order, as LINE does not promise order
    said = bot.fake.texts(user)
    assert "やりがい相談です" in said[0]
    assert any("人事なんですね" in t for t in said[1:])


# ------------------------------------------------------------ the webhook's guard


async def test_a_bad_signature_is_refused_and_nothing_is_stored(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    user = new_user_id()
    body = bot.hooks.body(bot.hooks.text(user, "秘密のメッセージ"))
    for signature in ("", sign("wrong-secret", body), "bm90IGl0"):
        answer = await bot.hooks.post(body, signature=signature)
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid signature"}
    await bot.settle()
    assert await rows(bot.runtime.store, inbox) == []
    assert sent_to_users(bot.fake) == []
    assert "LINE webhook refused" in caplog.text
    assert "秘密のメッセージ" not in caplog.text


async def test_nul_and_lone_surrogates_are_scrubbed_and_answered(bot: Bot) -> None:
    """What no store can keep is removed at the edge: the turn is saved and answered."""
    user = new_user_id()
    await bot.send(bot.hooks.follow(user))
    await bot.say(user, "経理\u0000です")
    # A lone surrogate can only arrive as a JSON escape: json.dumps would refuse to write one.
    raw = bot.hooks.body(bot.hooks.text(user, "人事PLACEHOLDER"))
    raw = raw.replace(b"PLACEHOLDER", b"\\ud800")
    answer = await bot.hooks.post(raw)
    assert answer.status_code == 200
    await bot.settle()
    stored = await bot.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None
    said = [m.text for m in await bot.runtime.store.transcript(stored.id) if m.direction == "in"]
    assert said[-2:] == ["経理です", "人事"]
    assert "経理なんですね" in "".join(bot.fake.texts(user))
    assert await bot.runtime.store.pending_events() == []


async def test_malformed_oversized_and_empty_bodies(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    settings = line_settings(tmp_path / "db.sqlite", fake, line_max_body_bytes=2000)
    async with serving(settings, fake) as bot:
        not_json = b"{definitely not json"
        assert (await bot.hooks.post(not_json)).status_code == 400
        assert (await bot.hooks.post(b'{"events": "no"}')).status_code == 400
        big = bot.hooks.body(bot.hooks.text(new_user_id(), "あ" * 1000))
        assert (await bot.hooks.post(big)).status_code == 413
        # The console's Verify button
        verify = b'{"destination":"U' + b"0" * 32 + b'","events":[]}'
        assert (await bot.hooks.post(verify)).status_code == 200
        await bot.settle()
        assert await rows(bot.runtime.store, inbox) == []


async def test_without_both_secrets_the_endpoint_is_off(
    tmp_path: Path, fake: FakeLineApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.channels.line.adapter")
    settings = line_settings(tmp_path / "db.sqlite", fake, line_channel_access_token=None)
    async with serving(settings, fake) as bot:
        answer = await bot.hooks.send(bot.hooks.follow(new_user_id()))
        assert answer.status_code == 404
    assert "LINE is off: set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN" in caplog.text
    assert fake.calls == []


# ------------------------------------------------------------ delivery


async def test_line_answering_500_then_200_delivers_once(bot: Bot) -> None:
    user = new_user_id()
    bot.fake.fail("reply", 500)
    await bot.send(bot.hooks.follow(user))
    assert [c.status for c in bot.fake.calls_of("reply")] == [500, 200]
    assert len(bot.fake.seen(user)) == 3
    assert [row["status"] for row in await rows(bot.runtime.store, outbox)] == ["sent"]


async def test_an_expired_reply_token_falls_back_to_push_with_a_retry_key(bot: Bot) -> None:
    user = new_user_id()
    event = bot.hooks.follow(user)
    bot.fake.expire(event["replyToken"])
    await bot.send(event)
    [refused] = bot.fake.calls_of("reply")
    assert refused.status == 400
    [push] = bot.fake.calls_of("push")
    assert push.status == 200 and uuid.UUID(push.retry_key or "")
    assert [d.via for d in bot.fake.seen(user)] == ["push"] * 3
    [item] = await rows(bot.runtime.store, outbox)
    assert item["status"] == "sent"


async def test_a_push_accepted_but_answered_500_is_not_delivered_twice(bot: Bot) -> None:
    user = new_user_id()
    event = bot.hooks.follow(user)
    bot.fake.expire(event["replyToken"])
    bot.fake.fail("push", 500, accept=True)  # LINE delivered it, then failed to say so
    await bot.send(event)
    pushes = bot.fake.calls_of("push")
    assert [c.status for c in pushes] == [500, 409]
    assert pushes[0].retry_key == pushes[1].retry_key
    assert len(bot.fake.seen(user)) == 3
    [item] = await rows(bot.runtime.store, outbox)
    assert item["status"] == "sent"


async def test_rate_limits_and_timeouts_are_retried(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    plugin(request_timeout=0.3, loading_after=None)
    async with serving(line_settings(tmp_path / "db.sqlite", fake), fake) as bot:
        user = new_user_id()
        fake.fail("reply", 429)
        fake.slow("reply", 1.0)  # our client gives up; LINE never acts on it
        await bot.send(bot.hooks.follow(user))
        assert [c.status for c in fake.calls_of("reply")] == [429, 499, 200]
        assert len(fake.seen(user)) == 3

        other = new_user_id()
        event = bot.hooks.follow(other)
        fake.expire(event["replyToken"])
        fake.slow("push", 1.0, accept=True)  # delivered, but the answer comes too late
        await bot.send(event)
        assert len(fake.seen(other)) == 3
        assert [c.status for c in fake.calls_of("push")][-1] == 409


async def test_a_refused_push_is_recorded_with_lines_reasons(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    user = new_user_id()
    event = bot.hooks.follow(user)
    bot.fake.expire(event["replyToken"])
    bot.fake.fail("push", 403, message="The bot is not a friend of the user")
    await bot.send(event)
    [item] = await rows(bot.runtime.store, outbox)
    assert item["status"] == "failed"
    assert "403" in item["last_error"] and "not a friend" in item["last_error"]
    [refused] = bot.fake.calls_of("push")
    assert f"x-line-request-id {refused.request_id}" in item["last_error"]
    assert "failed for good" in caplog.text
    metrics = bot.runtime.metrics.render().decode()
    assert 'yarigai_deliveries_failed_total{channel="line"} 1.0' in metrics


async def test_failed_rounds_are_pushed_again_by_the_sweeper(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    plugin(retry_delays=(0.01,), sweep_every=0.1, orphan_after=0.0, loading_after=None)
    async with serving(line_settings(tmp_path / "db.sqlite", fake), fake) as bot:
        user = new_user_id()
        event = bot.hooks.follow(user)
        fake.expire(event["replyToken"])
        fake.fail("push", 503, times=2)  # the whole first round fails
        await bot.send(event)
        [item] = await rows(bot.runtime.store, outbox)
        assert item["status"] == "pending" and item["attempts"] == 1
        await until(lambda: len(fake.seen(user)) == 3)
        await asyncio.sleep(0.3)  # later sweeps must not send it again
        assert len(fake.seen(user)) == 3
        [item] = await rows(bot.runtime.store, outbox)
        assert item["status"] == "sent"


async def test_the_loading_animation_shows_when_a_turn_takes_a_while(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    plugin(loading_after=0.05)
    async with serving(line_settings(tmp_path / "db.sqlite", fake), fake) as bot:
        slow_user, quick_user = new_user_id(), new_user_id()
        fake.slow("reply", 0.5)
        await bot.send(bot.hooks.follow(slow_user))
        [loading] = fake.calls_of("loading")
        assert loading.body == {"chatId": slow_user, "loadingSeconds": 10}
        assert len(fake.seen(slow_user)) == 3
    plugin(loading_after=1.0)
    async with serving(line_settings(tmp_path / "db.sqlite", fake), fake) as bot:
        await bot.send(bot.hooks.follow(quick_user))
        assert len(fake.calls_of("loading")) == 1  # the quick turn showed none


async def test_the_sender_pushes_in_batches_once_per_idempotency_key(bot: Bot) -> None:
    user = new_user_id()
    sender = bot.runtime.senders[Channel.LINE]
    key = ConversationKey(channel=Channel.LINE, address=user)
    messages = [TextOut(text=f"担当者からのメッセージ {i}") for i in range(7)]
    await sender.send(key, messages, idempotency_key="agent-reply-1", sender_name="担当 山田")
    await sender.send(key, messages, idempotency_key="agent-reply-1", sender_name="担当 山田")
    assert [d.text for d in bot.fake.seen(user)] == [m.text for m in messages]
    assert all(d.message["sender"] == {"name": "担当 山田"} for d in bot.fake.seen(user))
    assert [c.status for c in bot.fake.calls_of("push")] == [200, 200, 409, 409]
    # A refusal reaches the caller (the handoff desk) as the shared DeliveryFailed.
    bot.fake.fail("push", 403, message="The bot is not a friend of the user")
    with pytest.raises(DeliveryFailed, match="403: The bot is not a friend"):
        await sender.send(key, [TextOut(text="届かない")], idempotency_key="agent-reply-2")


# ------------------------------------------------------------ events


async def test_follow_unfollow_and_coming_back(bot: Bot) -> None:
    user = new_user_id()
    key = ConversationKey(channel=Channel.LINE, address=user)
    await bot.send(bot.hooks.follow(user))
    await bot.tap(user, "人事")
    await bot.send(bot.hooks.unfollow(user))
    stored = await bot.runtime.store.load(key)
    assert stored is not None and stored.state.status is Status.INACTIVE
    seen = len(bot.fake.seen(user))
    await bot.send(bot.hooks.follow(user, unblocked=True))
    back = bot.fake.seen(user)[seen:]
    assert any("おかえりなさい" in d.text for d in back)
    assert [b["label"] for b in back[-1].buttons][:2] == ["続きから", "最初から"]
    stored = await bot.runtime.store.load(key)
    assert stored is not None and stored.state.status is Status.ACTIVE


async def test_stickers_and_images_get_a_kind_reply_and_the_question_again(bot: Bot) -> None:
    user = new_user_id()
    # Before anything: thanks, and the conversation starts (the greeting and first question).
    await bot.send(bot.hooks.image(user))
    first = bot.fake.texts(user)
    assert first[0] == "画像を送ってくださってありがとうございます。"
    assert "やりがい相談です" in first[1] and bot.fake.last(user).buttons
    await bot.send(bot.hooks.sticker(user))
    kind, again = bot.fake.seen(user)[-2:]
    assert kind.text == "スタンプありがとうございます！" + ASK_FOR_BUTTON
    assert again.text == "まず、いまのお仕事を教えてください。" and again.buttons
    # The re-shown buttons still answer the question.
    await bot.tap(user, "総務")
    assert any("総務なんですね" in t for t in bot.fake.texts(user))
    # Kept in the transcript, as agents would read it.
    stored = await bot.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None
    said = [m.text for m in await bot.runtime.store.transcript(stored.id) if m.direction == "in"]
    assert said[:2] == ["（画像）", "（スタンプ）"]


async def test_in_a_group_the_bot_notes_once_then_stays_quiet(bot: Bot) -> None:
    group = "C" + uuid.uuid4().hex
    await bot.send(bot.hooks.join(group))
    await bot.send(bot.hooks.group_text(group, new_user_id(), "相談したいです"))
    await bot.send(bot.hooks.group_text(group, new_user_id(), "よろしく"))
    assert bot.fake.texts(group) == [GROUP_NOTE]
    recorded = await rows(bot.runtime.store, inbox)
    assert len(recorded) == 3 and all(r["processed_at"] and not r["error"] for r in recorded)


async def test_standby_and_unknown_events_are_recorded_never_answered(bot: Bot) -> None:
    user = new_user_id()
    standby = bot.hooks.event(
        "message",
        user,
        mode="standby",
        message={"type": "text", "id": "1", "quoteToken": "q", "text": "こんにちは"},
    )
    beacon = bot.hooks.event("beacon", user, beacon={"hwid": "d41d8cd98f", "type": "enter"})
    await bot.send(standby, beacon)
    assert sent_to_users(bot.fake) == []
    recorded = await rows(bot.runtime.store, inbox)
    assert len(recorded) == 2 and all(r["processed_at"] and not r["error"] for r in recorded)
    assert await bot.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user)) is None


async def test_while_waiting_for_an_agent_the_bot_says_nothing(bot: Bot) -> None:
    user = new_user_id()
    await bot.send(bot.hooks.follow(user))
    await bot.say(user, "担当者と話したい")
    assert any("担当者におつなぎしますね" in t for t in bot.fake.texts(user))
    stored = await bot.runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None and stored.mode is Mode.WAITING
    seen, replies = len(bot.fake.seen(user)), len(bot.fake.calls_of("reply"))
    await bot.send(bot.hooks.sticker(user))
    await bot.say(user, "よろしくお願いします")
    assert len(bot.fake.seen(user)) == seen
    assert len(bot.fake.calls_of("reply")) == replies


async def test_the_retention_purge_deletes_users_gone_long_enough(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    plugin(purge_every=0.05, loading_after=None)
    settings = line_settings(tmp_path / "db.sqlite", fake, retention_days=30)
    async with serving(settings, fake) as bot:
        gone, staying = (ConversationKey(channel=Channel.LINE, address=new_user_id()) for _ in "ab")
        for key in (gone, staying):
            await bot.send(bot.hooks.follow(key.address))
        store = bot.runtime.store
        await store.mark_inactive(gone, now=datetime.now(UTC) - timedelta(days=31))
        await store.mark_inactive(staying, now=datetime.now(UTC) - timedelta(days=29))

        async def purged() -> bool:
            return await store.load(gone) is None

        await until(purged)
        assert await store.load(staying) is not None


# ------------------------------------------------------------ restarts


async def test_events_acknowledged_but_not_processed_run_after_restart(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    database = tmp_path / "db.sqlite"
    user = new_user_id()
    hooks = Webhooks("http://unused", fake=fake)
    # What an acknowledged webhook leaves when the process dies before the worker runs.
    store = await SqlStore.open(f"sqlite:///{database}")
    for event in parse(hooks.body(hooks.follow(user))):
        await store.record_event(
            channel="line",
            event_id=event.id,
            address=event.chat_id,
            payload=event.model_dump(mode="json"),
            occurred_at=event.occurred_at,
        )
    await store.close()
    async with serving(line_settings(database, fake), fake) as bot:
        await until(lambda: len(fake.seen(user)) == 3)
        await bot.settle()
    assert [c.status for c in fake.calls_of("reply")] == [200]
    assert len(fake.seen(user)) == 3


async def test_a_saved_turn_not_yet_delivered_is_pushed_after_restart(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel]
) -> None:
    database = tmp_path / "db.sqlite"
    user = new_user_id()
    settings = line_settings(database, fake)
    # What a crash right after the turn's commit leaves: the reply waits in the outbox.
    runtime = await build(settings, "all", channels=())
    key = ConversationKey(channel=Channel.LINE, address=user)
    await runtime.service.handle(key, StartIn(), outbox=True)
    await runtime.close()
    async with serving(settings, fake) as bot:
        await until(lambda: len(fake.seen(user)) == 3)
        await asyncio.sleep(0.1)
        [item] = await rows(bot.runtime.store, outbox)
        assert item["status"] == "sent"
    assert [d.via for d in fake.seen(user)] == ["push"] * 3


@pytest.mark.parametrize("moment", ["at once", "once LINE is called"])
async def test_killed_between_ack_and_reply_the_user_gets_exactly_one_reply(
    tmp_path: Path, fake: FakeLineApi, plugin: Callable[..., LineChannel], moment: str
) -> None:
    database = tmp_path / "db.sqlite"
    user = new_user_id()
    # LINE hangs, so nothing can be delivered before the kill.
    fake.slow("reply", 30.0)
    fake.slow("push", 30.0)
    with _server_process(database, fake, tmp_path) as url:
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        answer = await hooks.send(hooks.follow(user))
        assert answer.status_code == 200
        if moment == "once LINE is called":
            await until(lambda: fake.holding > 0, within=10)
    # The process is gone (SIGKILL: no shutdown, no flush). Start again on the same database.
    fake.clear_faults()
    async with serving(line_settings(database, fake), fake) as bot:
        await until(lambda: len(fake.seen(user)) >= 3)
        await bot.settle()
        await asyncio.sleep(0.2)
    assert len(fake.seen(user)) == 3, fake.texts(user)


@contextmanager
def _server_process(database: Path, fake: FakeLineApi, workdir: Path) -> Iterator[str]:
    """`yarigai` under uvicorn in a child process, killed with SIGKILL on leaving."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "FLOWS_DIR": str(REPO / "flows"),
        "DEFAULT_FLOW": "career",
        "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
        "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
        "LINE_API_BASE_URL": fake.url,
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "uvicorn", "bot.http.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # The working directory is empty so no developer's .env is read.
    process = subprocess.Popen(command, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url)
        yield url
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def sent_to_users(fake: FakeLineApi) -> list[str]:
    """The calls that reach users (the push quota is read at start, whatever happens)."""
    return [call.operation for call in fake.calls if not call.operation.startswith("quota")]
