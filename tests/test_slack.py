"""The Slack channel through the real app: signed requests in, a fake Slack Web API out."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
import yaml
from fakes.slack_api import BOT_ID, BOT_USER_ID, FakeSlackApi, Posted, SlackEvents, dm_channel
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bot.channels.slack.events import parse
from bot.config import Settings
from bot.http.app import create_app
from bot.models import Channel, ConversationKey, ConversationState, TextOut
from bot.store import SqlStore, TranscriptEntry
from bot.store.schema import inbox, outbox
from bot.wiring import Runtime

SIGNING_SECRET = "fake-signing-secret-abcdef"
ROOT = Path(__file__).parent.parent
USER = "U0USER01"
CHANNEL_ID = "C0GENERAL"
STALE = "そのボタンは前の質問のものでした"
T = TypeVar("T")


@dataclass
class SlackWorld:
    """The app, the fake Slack API and a user, with the moves a test needs."""

    client: TestClient
    api: FakeSlackApi
    events: SlackEvents

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime
        return runtime

    def post(
        self,
        body: str,
        *,
        form: bool = False,
        retry: int | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        events = SlackEvents(secret) if secret else self.events
        headers = events.headers(
            body,
            timestamp=timestamp,
            retry=retry,
            content_type="application/x-www-form-urlencoded" if form else "application/json",
        )
        return self.client.post("/slack/events", content=body.encode(), headers=headers)

    def event(self, event: dict[str, Any], **kwargs: Any) -> httpx.Response:
        response = self.post(self.events.event_callback(event), **kwargs)
        self.idle()
        return response

    def dm(self, text: str, *, user: str = USER) -> Posted:
        """`user` writes `text` to the bot; returns the message as Slack keeps it."""
        said = self.api.add_user_message(dm_channel(user), text, user=user)
        assert self.event(self.events.dm(user, text, said.ts)).status_code == 200
        return said

    def click(self, label: str, message: Posted | None = None, *, user: str = USER) -> None:
        message = message or self.question(dm_channel(user))
        body = self.events.block_actions(user, message, message.button(label))
        assert self.post(body, form=True).status_code == 200
        self.idle()

    def question(self, channel: str, thread_ts: str | None = None) -> Posted:
        """The newest message with buttons."""
        asked = [m for m in self.api.messages(channel, thread_ts) if m.buttons()]
        assert asked, f"no question in {channel}"
        return asked[-1]

    def idle(self) -> None:
        """Wait until the worker has run every turn (and delivery) the requests caused."""
        self.run(self.runtime.worker.idle)

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `function(*args)` on the app's event loop."""
        portal = self.client.portal
        assert portal is not None
        return portal.call(function, *args)

    def sql(self, query: sa.Select[Any]) -> list[Any]:
        async def run() -> list[Any]:
            async with self.runtime.store.engine.connect() as connection:
                return list((await connection.execute(query)).all())

        return self.run(run)


@pytest.fixture
def api() -> Iterator[FakeSlackApi]:
    with FakeSlackApi(users={USER: {"name": "hanako", "real_name": "山田花子"}}) as fake:
        yield fake


def settings_for(tmp_path: Path, api: FakeSlackApi, *, flow: str = "mini") -> Settings:
    if flow == "mini":
        flows = tmp_path / "flows"
        flows.mkdir(exist_ok=True)
        (flows / "mini.yaml").write_text(
            (ROOT / "tests" / "flows" / "mini.yaml").read_text(encoding="utf-8"), encoding="utf-8"
        )
    else:
        flows = ROOT / "flows"
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=flows,
        default_flow=flow,
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_bot_token=SecretStr(api.token),
        slack_api_base_url=api.base_url,
    )


@contextmanager
def world(settings: Settings, api: FakeSlackApi) -> Iterator[SlackWorld]:
    """The app started (lifespan and all) with `settings`, talking to `api`."""
    with TestClient(create_app(settings)) as client:
        yield SlackWorld(client=client, api=api, events=SlackEvents(SIGNING_SECRET))


@pytest.fixture
def slack(tmp_path: Path, api: FakeSlackApi) -> Iterator[SlackWorld]:
    with world(settings_for(tmp_path, api), api) as started:
        yield started


def texts(messages: list[Posted]) -> list[str]:
    """What the bot said among `messages` (the user's own messages are in the history too)."""
    return [m.text for m in messages if m.bot_id == BOT_ID]


# ---------------------------------------------------------------- the endpoint


def test_url_verification_is_answered(slack: SlackWorld) -> None:
    body = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"})
    response = slack.post(body)
    assert response.status_code == 200
    assert response.json() == {"challenge": "c-123"}


def test_bad_or_stale_signatures_are_refused_and_nothing_happens(slack: SlackWorld) -> None:
    body = slack.events.event_callback(slack.events.dm(USER, "こんにちは", "1700000001.000100"))
    assert slack.post(body, secret="not-the-secret").status_code == 401
    six_minutes_ago = int(time.time()) - 360
    assert slack.post(body, timestamp=six_minutes_ago).status_code == 401
    unsigned = slack.client.post("/slack/events", content=body.encode())
    assert unsigned.status_code == 401
    slack.idle()
    assert slack.sql(sa.select(inbox)) == []
    assert slack.api.calls_to("chat.postMessage") == []


def test_requests_the_bot_does_not_act_on_are_acknowledged_without_effect(
    slack: SlackWorld,
) -> None:
    slack.dm("こんにちは")  # so the conversation exists and thread/DM routing is in play
    posts_before = len(slack.api.calls_to("chat.postMessage"))
    rows_before = len(slack.sql(sa.select(inbox)))
    channel = dm_channel(USER)
    ignored = [
        # the bot's own message, echoed back as message.im
        {**slack.events.dm(BOT_USER_ID, "お仕事は？", "1700000100.000001"), "bot_id": BOT_ID},
        # another bot
        {
            **slack.events.dm("U0OTHERBOT", "ping", "1700000100.000002"),
            "subtype": "bot_message",
            "bot_id": "B0OTHER",
        },
        # an edit and a deletion
        {
            "type": "message",
            "subtype": "message_changed",
            "channel": channel,
            "channel_type": "im",
            "hidden": True,
            "message": {"type": "message", "user": USER, "text": "経理", "ts": "1700000100.3"},
            "ts": "1700000100.000004",
        },
        {
            "type": "message",
            "subtype": "message_deleted",
            "channel": channel,
            "channel_type": "im",
            "hidden": True,
            "deleted_ts": "1700000100.3",
            "ts": "1700000100.000005",
        },
        # channel chatter, and a reply in a thread the bot is not in
        slack.events.channel_message(USER, CHANNEL_ID, "ランチ行く人", "1700000100.000006"),
        slack.events.channel_message(
            USER, CHANNEL_ID, "行く", "1700000100.000007", thread_ts="1700000100.000006"
        ),
        # an event type the app does not subscribe to
        {"type": "reaction_added", "user": USER, "reaction": "+1", "event_ts": "1700000100.8"},
    ]
    for event in ignored:
        response = slack.event(event)
        assert response.status_code == 200, event
    # a click on a button that is not ours (e.g. a link button in someone's message)
    foreign = slack.api.add_user_message(channel, "x", user=USER)
    foreign.blocks = [
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "other-app",
                    "text": {"type": "plain_text", "text": "Open"},
                }
            ],
        }
    ]
    body = slack.events.block_actions(USER, foreign, foreign.buttons()[0])
    assert slack.post(body, form=True).status_code == 200
    slack.idle()
    assert len(slack.api.calls_to("chat.postMessage")) == posts_before
    assert len(slack.sql(sa.select(inbox))) == rows_before


def test_disabled_without_the_secrets(
    tmp_path: Path, api: FakeSlackApi, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, api).model_copy(update={"slack_signing_secret": None})
    caplog.set_level(logging.INFO, logger="bot.channels.slack.adapter")
    with TestClient(create_app(settings)) as client:
        body = json.dumps({"type": "url_verification", "challenge": "c"})
        assert client.post("/slack/events", content=body).status_code == 404
    disabled = [r.getMessage() for r in caplog.records if "Slack channel disabled" in r.message]
    assert disabled == [
        "Slack channel disabled: SLACK_SIGNING_SECRET not set; POST /slack/events answers 404"
    ]


# ---------------------------------------------------------------- conversations


def test_whole_career_conversation_in_a_dm_with_buttons_and_text(
    tmp_path: Path, api: FakeSlackApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with world(settings_for(tmp_path, api, flow="career"), api) as slack:
        slack.dm("こんにちは")
        greeting = texts(api.dm(USER))
        assert "Zキャリアのやりがい相談です" in greeting[0]
        assert "まず、いまのお仕事を教えてください" in slack.question(dm_channel(USER)).text

        role = slack.question(dm_channel(USER))
        slack.click("経理")
        answered = api.messages(dm_channel(USER))[api.messages(dm_channel(USER)).index(role)]
        assert answered.buttons() == [] and "✅ 経理" in answered.shown_text()
        assert "経理なんですね" in "\n".join(texts(api.dm(USER)))

        # Multi-select: a pick replaces the question with the pick marked; text adds more.
        frustrations = slack.question(dm_channel(USER))
        slack.click("毎日同じことの繰り返し")
        replaced = slack.question(dm_channel(USER))
        assert replaced.ts == frustrations.ts and replaced.edits == 1
        marked = replaced.button("毎日同じことの繰り返し")
        assert marked["text"]["text"] == "✓ 毎日同じことの繰り返し" and marked["style"] == "primary"
        slack.dm("成果が形に残らないのもつらい")
        assert (
            "「成果が見えにくい」「毎日同じことの繰り返し」"
            in slack.question(dm_channel(USER)).text
        )
        slack.click("これで全部")
        assert "（1/8）" in slack.question(dm_channel(USER)).text

        for answer in ["当てはまらない", "当てはまる", "当てはまらない", "当てはまる"]:
            slack.click(answer)
        for said in ["あんまり", "はい", "全然", "まさにそれ"]:
            slack.dm(said)
        assert "これから、どうしていきたいですか" in slack.question(dm_channel(USER)).text
        slack.click("今の職場で工夫したい")
        slack.dm("マクロやってみたい、できそう")
        slack.click("日商簿記")
        slack.dm("ちょっと安心した")

        shown = api.dm(USER)
        cards = [m for m in shown if m.blocks and m.blocks[0]["type"] == "header"]
        card = cards[-1]
        assert card.blocks[0]["text"]["text"] == "あなたのやりがい相談まとめ"
        assert "*お仕事*\n経理" in card.shown_text()
        assert "■ お仕事\n経理" in card.text  # the plain fallback
        final = slack.question(dm_channel(USER))
        assert [b["text"]["text"] for b in final.buttons()] == [
            "担当者と話したい",
            "面談を予約する",
            "最初からやり直す",
            "終わる",
            "3日後に様子を聞いて",
        ]
        slack.click("終わる")
        assert "話してくれてありがとうございました" in "\n".join(texts(api.dm(USER)[-2:]))

        failed = [c for c in api.calls if not c.response.get("ok")]
        assert failed == []
        assert all(m.text for m in api.dm(USER)), "every message carries a text fallback"
        statuses = {row.status for row in slack.sql(sa.select(outbox.c.status))}
        assert statuses == {"sent"}
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert api.token not in log_text
    assert SIGNING_SECRET not in log_text


def test_retries_and_duplicates_of_one_message_give_one_turn(slack: SlackWorld) -> None:
    said = slack.api.add_user_message(dm_channel(USER), "こんにちは", user=USER)
    event = slack.events.dm(USER, "こんにちは", said.ts)
    body = slack.events.event_callback(event, event_id="Ev0001")
    for retry in (None, 1, 2, 3):
        assert slack.post(body, retry=retry).status_code == 200
    # The same message again under another event id (Slack does this too): still one turn.
    assert slack.event(event, retry=1).status_code == 200
    slack.idle()
    assert texts(slack.api.dm(USER)) == ["こんにちは、テスト社です", "お仕事は？"]
    assert len(slack.sql(sa.select(inbox))) == 1


def test_a_retry_that_is_the_only_copy_to_arrive_is_answered(slack: SlackWorld) -> None:
    said = slack.api.add_user_message(dm_channel(USER), "経理です", user=USER)
    assert slack.event(slack.events.dm(USER, said.text, said.ts), retry=2).status_code == 200
    assert texts(slack.api.dm(USER))[-1] == "悩みは？"


def test_a_double_click_moves_the_conversation_once(slack: SlackWorld) -> None:
    slack.dm("こんにちは")
    role = slack.question(dm_channel(USER))
    button = role.button("経理")
    for action_ts in ("1700000200.000001", "1700000200.000002"):
        body = slack.events.block_actions(USER, role, button, action_ts=action_ts)
        assert slack.post(body, form=True).status_code == 200
    slack.idle()
    shown = slack.api.dm(USER)
    assert role.edits == 1 and role.buttons() == []
    assert "✅ 経理" in role.shown_text()
    after = texts(shown[shown.index(role) + 1 :])
    assert after == ["悩みは？"]  # the first click moved on; the second is not answered at all

    # A double click on a multi-select pick: picked once, still one set of buttons.
    pains = slack.question(dm_channel(USER))
    pick = pains.button("単調")
    for action_ts in ("1700000300.000001", "1700000300.000002"):
        body = slack.events.block_actions(USER, pains, pick, action_ts=action_ts)
        assert slack.post(body, form=True).status_code == 200
    slack.idle()
    assert slack.question(dm_channel(USER)).ts == pains.ts
    assert len(slack.api.dm(USER)) == len(shown)
    assert pains.button("単調")["text"]["text"] == "✓ 単調"

    # And a click that is simply repeated by Slack (same action_ts) is one event.
    body = slack.events.block_actions(USER, pains, pains.button("これで全部"), action_ts="1.5")
    assert slack.post(body, form=True).status_code == 200
    assert slack.post(body, form=True).status_code == 200
    slack.idle()
    assert "経理なら自動化がおすすめ" in texts(slack.api.dm(USER))
    assert texts(slack.api.dm(USER)).count("またね") == 1


def test_a_mention_in_a_channel_continues_in_its_thread(slack: SlackWorld) -> None:
    mention = slack.api.add_user_message(CHANNEL_ID, f"<@{BOT_USER_ID}> 会計です", user=USER)
    slack.event(slack.events.mention(USER, CHANNEL_ID, mention.text, mention.ts))
    thread = slack.api.messages(CHANNEL_ID, thread_ts=mention.ts)
    # The first words already answer the first question.
    assert texts(thread) == ["こんにちは、テスト社です", "お仕事は？", "悩みは？"]
    assert texts(slack.api.messages(CHANNEL_ID)) == [], "the bot says nothing at the top level"

    # A plain reply in the thread continues the conversation (message.channels).
    reply = slack.api.add_user_message(CHANNEL_ID, "単調なんです", user=USER, thread_ts=mention.ts)
    slack.event(
        slack.events.channel_message(USER, CHANNEL_ID, reply.text, reply.ts, thread_ts=mention.ts)
    )
    assert "いま選んでいるのは「単調」" in slack.api.messages(CHANNEL_ID, mention.ts)[-1].text

    # A reply that mentions the bot arrives twice (message + app_mention): one turn.
    again = slack.api.add_user_message(
        CHANNEL_ID, f"<@{BOT_USER_ID}> 評価も", user="U0COLLEAGUE", thread_ts=mention.ts
    )
    before = len(slack.api.messages(CHANNEL_ID, mention.ts))
    slack.event(
        slack.events.channel_message(
            "U0COLLEAGUE", CHANNEL_ID, again.text, again.ts, thread_ts=mention.ts
        )
    )
    slack.event(
        slack.events.mention("U0COLLEAGUE", CHANNEL_ID, again.text, again.ts, thread_ts=mention.ts)
    )
    assert len(slack.api.messages(CHANNEL_ID, mention.ts)) == before + 1

    # Buttons in the thread answer the thread's conversation.
    slack.click("これで全部", slack.question(CHANNEL_ID, mention.ts))
    said = texts(slack.api.messages(CHANNEL_ID, mention.ts))
    assert "経理なら自動化がおすすめ" in said and said[-1] == "またね"
    assert slack.api.dm(USER) == []
    key = ConversationKey(channel=Channel.SLACK, address=f"{CHANNEL_ID}:{mention.ts}")
    stored = slack.run(slack.runtime.store.load, key)
    assert stored is not None and stored.state.slots["pains"] == ["boring", "thanks"]


# ---------------------------------------------------------------- Slack API failures


def test_rate_limited_then_delivered_once(slack: SlackWorld) -> None:
    slack.api.fail_next("chat.postMessage", status=429, retry_after=1)
    slack.dm("こんにちは")
    assert texts(slack.api.dm(USER)) == ["こんにちは、テスト社です", "お仕事は？"]
    calls = slack.api.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200, 200]
    assert calls[1].at - calls[0].at >= 1.0, "waited for Retry-After"
    assert [row.status for row in slack.sql(sa.select(outbox.c.status))] == ["sent"]


def test_slack_errors_are_logged_with_their_code_and_recorded(
    slack: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.channels.slack.adapter")
    slack.api.fail_next("chat.postMessage", error="channel_not_found")
    slack.dm("こんにちは")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("chat.postMessage: channel_not_found" in r.getMessage() for r in errors)
    rows = slack.sql(sa.select(outbox.c.status, outbox.c.last_error))
    assert [(r.status, r.last_error) for r in rows] == [
        ("failed", "chat.postMessage: channel_not_found")
    ]

    slack.api.fail_next("chat.postMessage", status=500, times=2)  # the SDK retries a 500 once
    slack.dm("経理です")
    rows = slack.sql(sa.select(outbox.c.status, outbox.c.last_error).order_by(outbox.c.id))
    assert (rows[-1].status, rows[-1].last_error) == ("failed", "chat.postMessage: http_500")
    assert [c.status for c in slack.api.calls_to("chat.postMessage")[-2:]] == [500, 500]

    slack.dm("単調")  # Slack is back: the conversation goes on
    assert "いま選んでいるのは「単調」" in texts(slack.api.dm(USER))[-1]


# ---------------------------------------------------------------- sender and restarts


def test_the_sender_posts_as_an_agent_once_per_idempotency_key(slack: SlackWorld) -> None:
    sender = slack.runtime.senders[Channel.SLACK]
    key = ConversationKey(channel=Channel.SLACK, address=dm_channel(USER))
    message = [TextOut(text="担当の佐藤です。よろしくお願いします。")]

    async def send_twice() -> None:
        for _ in range(2):
            await sender.send(key, message, idempotency_key="agent-1", sender_name="佐藤")

    slack.run(send_twice)
    shown = slack.api.dm(USER)
    assert len(shown) == 1
    assert shown[0].blocks[0] == {
        "type": "context",
        "elements": [{"type": "plain_text", "text": "担当: 佐藤", "emoji": True}],
    }
    # A user id works too: the sender opens the DM.
    to_user = ConversationKey(channel=Channel.SLACK, address=USER)
    slack.run(lambda: sender.send(to_user, message, idempotency_key="agent-2"))
    assert len(slack.api.dm(USER)) == 2
    assert slack.api.calls_to("conversations.open")[0].args["users"] == USER


def test_events_and_replies_left_from_a_stopped_process_are_finished(
    tmp_path: Path, api: FakeSlackApi
) -> None:
    settings = settings_for(tmp_path, api)
    events = SlackEvents(SIGNING_SECRET)
    said = api.add_user_message(dm_channel(USER), "こんにちは", user=USER)
    body = json.loads(events.event_callback(events.dm(USER, "こんにちは", said.ts)))
    inbound = parse(body, bot_user_id=BOT_USER_ID)
    assert inbound is not None
    thread = api.add_user_message(CHANNEL_ID, "相談です", user=USER)
    in_thread = ConversationKey(channel=Channel.SLACK, address=f"{CHANNEL_ID}:{thread.ts}")

    async def stopped_process() -> None:
        store = await SqlStore.open(settings.database_url)
        try:
            # An event acknowledged, but not processed when the process stopped:
            await store.record_event(
                channel="slack",
                event_id=inbound.event_id,
                address=inbound.address,
                payload=inbound.model_dump(mode="json"),
                occurred_at=inbound.occurred_at,
            )
            # A turn saved, but its reply not delivered yet:
            await store.save_turn(
                in_thread,
                state=ConversationState(flow="mini", flow_version="1", state="role"),
                expected_version=None,
                inbound=[],
                outbound=[TranscriptEntry(direction="out", sender="bot", text="お仕事は？")],
                deliver=[TextOut(text="お仕事は？").model_dump(mode="json")],
            )
        finally:
            await store.close()

    asyncio.run(stopped_process())
    with world(settings, api) as slack:
        slack.idle()
        assert texts(api.dm(USER)) == ["こんにちは、テスト社です", "お仕事は？"]
        assert texts(api.messages(CHANNEL_ID, thread.ts)) == ["お仕事は？"]
        assert {row.status for row in slack.sql(sa.select(outbox.c.status))} == {"sent"}


def test_the_manifest_subscribes_to_what_the_channel_handles() -> None:
    manifest = yaml.safe_load((ROOT / "slack" / "manifest.yaml").read_text(encoding="utf-8"))
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.channels",
        "message.groups",  # the agent channel, when private (tests/test_slack_agents.py)
        "message.im",
    }
    assert settings["interactivity"]["is_enabled"] is True
    for url in (
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ):
        assert url.startswith("https://") and url.endswith("/slack/events")
    # The scopes the events and the Web API methods the channel calls need, and no more.
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read",
        "channels:history",
        "groups:history",  # the agent channel, when private
        "im:history",
        "chat:write",
        "im:write",
        "users:read",  # agents' display names
    }
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is False
