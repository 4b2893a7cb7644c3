"""The Slack agent channel through the real app: handoffs become cards in a fake Slack channel,
agents click and reply with signed requests, users are on the web chat or a Slack DM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import sqlalchemy as sa
import yaml
from agent_app import AgentApp, agent_app
from fakes.slack_api import (
    BOT_ID,
    BOT_USER_ID,
    FakeSlackApi,
    Posted,
    SlackEvents,
    block_kit_errors,
    dm_channel,
)

from bot.channels.slack.agents.actions import REFUSED, AgentChannelConfig, SlackAgentNames
from bot.channels.slack.agents.blocks import (
    CLAIM_LABEL,
    agent_said,
    card,
    release_label,
    user_said,
)
from bot.channels.slack.agents.events import (
    AgentClick,
    AgentPost,
    AgentRequest,
    address,
    agent_text,
    parse_agent,
)
from bot.config import Settings
from bot.handoff.desk import AgentRef
from bot.models import Channel, ConversationKey, StoredMessage
from bot.store import CannedReplyStore, Handoff, HandoffOutcome, HandoffStatus, SqlStore
from bot.store.schema import inbox

SIGNING_SECRET = "fake-signing-secret-agents"
ROOT = Path(__file__).parent.parent
AGENTS = "C0AGENTS1"
SATO, SUZUKI, STRANGER = "U0SATO001", "U0SUZUKI1", "U0STRANGE"
USER = "U0USER001"
PUBLIC_URL = "https://yarigai.example.com"


@dataclass
class AgentChannel:
    """The app with the agent channel on, the fake Slack API, and what agents and users do."""

    app: AgentApp
    api: FakeSlackApi
    events: SlackEvents

    # ------------------------------------------------------------ Slack's side

    def post(self, body: str, *, form: bool = False, retry: int | None = None) -> None:
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        headers = self.events.headers(body, retry=retry, content_type=content_type)
        answer = self.app.client.post("/slack/events", content=body.encode(), headers=headers)
        assert answer.status_code == 200, answer.text
        self.app.settle()

    def click(self, label: str, *, user: str, message: Posted | None = None) -> None:
        message = message or self.card()
        self.click_button(message, message.button(label), user=user)

    def click_button(self, message: Posted, button: dict[str, Any], *, user: str) -> None:
        self.post(self.events.block_actions(user, message, button), form=True)

    def reply(self, text: str, *, user: str, thread: Posted | None = None, retry: int = 0) -> str:
        """`user` writes `text` in the card's thread; returns the message's ts."""
        root = thread or self.card()
        said = self.api.add_user_message(AGENTS, text, user=user, thread_ts=root.ts)
        event = self.events.channel_message(user, AGENTS, text, said.ts, thread_ts=root.ts)
        body = self.events.event_callback(event)
        for attempt in range(retry + 1):
            self.post(body, retry=attempt or None)
        return said.ts

    def dm(self, text: str, *, user: str = USER) -> None:
        said = self.api.add_user_message(dm_channel(user), text, user=user)
        self.post(self.events.event_callback(self.events.dm(user, text, said.ts)))

    # ------------------------------------------------------------ what people see

    def cards(self) -> list[Posted]:
        return [m for m in self.api.messages(AGENTS) if m.bot_id == BOT_ID]

    def card(self) -> Posted:
        cards = self.cards()
        assert cards, "no card in the agent channel"
        return cards[-1]

    def thread(self, root: Posted | None = None) -> list[str]:
        """What the bot wrote in the card's thread."""
        root = root or self.card()
        return [m.shown_text() for m in self.api.messages(AGENTS, root.ts) if m.bot_id == BOT_ID]

    def told(self, user: str) -> list[str]:
        return [e.text for e in self.api.ephemerals(user)]

    def handoff(self, handoff_id: int) -> Handoff:
        return self.app.run(lambda: self.app.desk.handoffs.get(handoff_id))


@pytest.fixture
def api() -> Iterator[FakeSlackApi]:
    users: dict[str, dict[str, Any]] = {
        SATO: {"name": "sato", "real_name": "佐藤一郎", "profile": {"display_name": "佐藤"}},
        SUZUKI: {"name": "suzuki", "real_name": "鈴木花", "profile": {"display_name": ""}},
        STRANGER: {"name": "stranger", "real_name": "通りすがり"},
        USER: {"name": "hanako", "real_name": "山田花子"},
    }
    with FakeSlackApi(users=users) as fake:
        yield fake


def slack_settings(api: FakeSlackApi, **overrides: Any) -> dict[str, Any]:
    return {
        "slack_signing_secret": SIGNING_SECRET,
        "slack_bot_token": api.token,
        "slack_api_base_url": api.base_url,
        "slack_agent_channel": AGENTS,
        "slack_agent_users": f"{SATO}, {SUZUKI}",
        "public_url": PUBLIC_URL + "/",
        **overrides,
    }


@pytest.fixture
def agents(tmp_path: Path, api: FakeSlackApi) -> Iterator[AgentChannel]:
    with agent_app(tmp_path, **slack_settings(api)) as app:
        app.add_agent("hanako", "花子")
        yield AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))


def waiting(agents: AgentChannel) -> tuple[str, int]:
    """A web chat user who asked for an agent: (session, handoff id)."""
    session = agents.app.web_user()
    return session, agents.app.waiting_handoff(session)


def web_lines(agents: AgentChannel, session: str) -> list[tuple[str, str]]:
    history = agents.app.history(session)["messages"]
    return [(m["sender"], m["text"]) for m in history]


# ---------------------------------------------------------------- the card and its thread


def test_a_new_handoff_is_a_card_with_summary_link_and_take_over_button(
    agents: AgentChannel,
) -> None:
    session = agents.app.web_user()
    agents.app.say(session, "経理")
    agents.app.say(session, "担当者と話したい")

    [shown] = agents.cards()
    [queued] = agents.app.desk_queue()
    text = shown.shown_text()
    assert f"担当者への相談 #{queued['id']}" in text
    assert "*Webチャット* のユーザー" in text and "*理由:* 相談希望" in text
    assert (
        "・お仕事は？: 経理" in text
    )  # the summary: what the user answered (no label: the question)
    assert f"<{PUBLIC_URL}/console/handoffs/{queued['id']}|会話の全文をコンソールで見る>" in text
    assert "*受付待ち:*" in text
    assert [b["text"]["text"] for b in shown.buttons()] == [CLAIM_LABEL]
    assert shown.text.endswith("受付待ち")  # the notification's fallback
    # The thread starts with the end of the conversation, for agents without the console.
    [recent] = agents.thread(shown)
    assert "これまでのやりとり" in recent and "*ユーザー:* 経理" in recent
    handoff = agents.handoff(queued["id"])
    ref = handoff.ref("slack")
    assert ref is not None and (ref.ref, ref.data["channel"]) == (shown.ts, AGENTS)


def test_without_public_url_the_card_has_no_link(tmp_path: Path, api: FakeSlackApi) -> None:
    with agent_app(tmp_path, **slack_settings(api, public_url="")) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        waiting(world)
        assert "/console/handoffs/" not in world.card().shown_text()


def test_a_slack_dm_user_handed_to_an_agent_in_the_agent_channel(agents: AgentChannel) -> None:
    agents.dm("こんにちは")
    agents.dm("担当者と話したい")
    assert "ふだんは15分ほどで担当者からお返事します" in agents.api.dm(USER)[-1].text
    shown = agents.card()
    assert "*Slack* のユーザー" in shown.shown_text()

    agents.click(CLAIM_LABEL, user=SATO)
    assert shown.edits == 1
    assert f"*対応中:* <@{SATO}>" in shown.shown_text()
    assert [b["text"]["text"] for b in shown.buttons()] == [
        release_label(o) for o in HandoffOutcome
    ]
    assert f"<@{SATO}>さんが対応を始めました" in agents.thread()[-1]

    agents.dm("転職も考えています")
    assert agents.thread()[-1] == "👤 ユーザー（Slack）\n転職も考えています"
    assert agents.api.dm(USER)[-1].text == "転職も考えています", "the bot stays silent"

    agents.reply("担当の佐藤です。\nお話を聞かせてください。", user=SATO)
    answer = agents.api.dm(USER)[-1]
    assert answer.bot_id == BOT_ID
    assert answer.shown_text() == "担当: 佐藤\n担当の佐藤です。\nお話を聞かせてください。"

    agents.reply("// 転職意向あり", user=SATO)
    assert agents.api.dm(USER)[-1] is answer, "a note never reaches the user"

    # Handing back says how it ended: the outcome is kept, on the card and in the thread.
    agents.click(release_label(HandoffOutcome.BOOKED), user=SATO)
    assert agents.api.dm(USER)[-1].text == "またね"
    assert "おかえりなさい" in [m.text for m in agents.api.dm(USER)[-3:]]
    assert f"*対応終了（面談予約済み）:* <@{SATO}>さんがボットに戻しました" in shown.shown_text()
    assert shown.buttons() == []
    assert f"<@{SATO}>さんがボットに戻しました（結果: 面談予約済み）" in agents.thread()[-1]

    [closed] = agents.app.client.get(
        "/api/v1/handoffs", params={"status": "closed"}, headers=agents.app.api("hanako")
    ).json()
    assert (closed["outcome"], closed["outcome_label"]) == ("booked", "面談予約済み")
    detail = agents.app.client.get(
        f"/api/v1/handoffs/{closed['id']}", headers=agents.app.api("hanako")
    ).json()
    lines = [(line["sender"], line["text"], line["agent_name"]) for line in detail["transcript"]]
    assert ("agent", "担当の佐藤です。\nお話を聞かせてください。", "佐藤") in lines
    assert ("note", "転職意向あり", "佐藤") in lines
    assert [(c["to_mode"], c["who"]) for c in detail["mode_changes"]][1:] == [
        ("agent", f"slack:{SATO}"),
        ("bot", f"slack:{SATO}"),
    ]


def test_the_users_web_chat_gets_the_reply_and_the_bot_resumes(agents: AgentChannel) -> None:
    session, handoff = waiting(agents)
    agents.click(CLAIM_LABEL, user=SUZUKI)
    agents.app.say(session, "よろしくお願いします")
    assert agents.thread()[-1] == "👤 ユーザー（Webチャット）\nよろしくお願いします"

    agents.reply("鈴木です", user=SUZUKI)
    agents.click(release_label(HandoffOutcome.INFO_ONLY), user=SUZUKI)

    lines = web_lines(agents, session)
    assert ("agent", "鈴木です") in lines
    assert lines[-2:] == [("bot", "おかえりなさい"), ("bot", "またね")]
    # No display name in Slack: the real name is what the user sees.
    assert agents.handoff(handoff).agent_name == "鈴木花"


# ---------------------------------------------------------------- who may do what


def test_a_click_by_someone_not_among_the_agents_is_refused(agents: AgentChannel) -> None:
    _, handoff = waiting(agents)
    shown = agents.card()

    agents.click(CLAIM_LABEL, user=STRANGER)

    assert agents.told(STRANGER) == [REFUSED]
    assert agents.handoff(handoff).status is HandoffStatus.WAITING
    assert shown.edits == 0
    assert agents.api.calls_to("users.info") == []  # not even looked up


def test_a_click_outside_the_agent_channel_is_refused(agents: AgentChannel) -> None:
    _, handoff = waiting(agents)
    copied = agents.api.add_user_message("C0RANDOM1", "転送されたカード", user=SATO)
    copied.blocks = agents.card().blocks

    agents.click(CLAIM_LABEL, user=SATO, message=copied)

    [refusal] = agents.api.ephemerals(SATO)
    assert refusal.channel == "C0RANDOM1" and "担当者チャンネルでだけ" in refusal.text
    assert agents.handoff(handoff).status is HandoffStatus.WAITING


def test_a_second_agent_on_a_claimed_card_is_told_who_has_it(agents: AgentChannel) -> None:
    _, handoff = waiting(agents)
    shown = agents.card()
    take_over = shown.button(CLAIM_LABEL)  # as the second agent's Slack still shows it

    agents.click(CLAIM_LABEL, user=SATO)
    agents.click_button(shown, take_over, user=SUZUKI)

    assert agents.told(SUZUKI) == [f"<@{SATO}>さんが対応中です。"]
    assert agents.handoff(handoff).agent == f"slack:{SATO}"
    # Nor may the second agent hand it back.
    agents.click(release_label(HandoffOutcome.INFO_ONLY), user=SUZUKI)
    assert agents.told(SUZUKI)[-1] == f"ボットに戻せるのは対応中の担当者（<@{SATO}>さん）だけです。"
    assert agents.handoff(handoff).status is HandoffStatus.CLAIMED


def test_only_the_holders_replies_reach_the_user(agents: AgentChannel) -> None:
    session, handoff = waiting(agents)

    agents.reply("まだ誰も取っていない", user=SATO)
    assert "まだ誰も対応していません" in agents.told(SATO)[-1]

    agents.click(CLAIM_LABEL, user=SATO)
    agents.reply("横から失礼します", user=SUZUKI)
    [refusal] = agents.api.ephemerals(SUZUKI)
    assert refusal.thread_ts == agents.card().ts
    assert f"<@{SATO}>さんが対応中です。この返信はユーザーに届いていません。" in refusal.text
    agents.reply("// 鈴木: 前回も相談あり", user=SUZUKI)  # any agent may leave a note
    agents.reply("こんにちは", user=STRANGER)
    assert agents.told(STRANGER) == [f"{REFUSED}この返信はユーザーに届いていません。"]

    agents.reply("x" * 2001, user=SATO)
    assert "2000文字までです（2001文字）" in agents.told(SATO)[-1]

    said = [text for sender, text in web_lines(agents, session) if sender == "agent"]
    assert said == []
    detail = agents.app.client.get(
        f"/api/v1/handoffs/{handoff}", headers=agents.app.api("hanako")
    ).json()
    assert [line["text"] for line in detail["transcript"] if line["sender"] == "note"] == [
        "鈴木: 前回も相談あり"
    ]


def test_a_reply_after_the_release_is_refused(agents: AgentChannel) -> None:
    session, _ = waiting(agents)
    agents.click(CLAIM_LABEL, user=SATO)
    card_before = agents.card()
    agents.click(release_label(HandoffOutcome.INFO_ONLY), user=SATO)

    agents.reply("言い忘れました", user=SATO, thread=card_before)

    assert "もう終わっています" in agents.told(SATO)[-1]
    assert "言い忘れました" not in [text for _, text in web_lines(agents, session)]


def test_claims_from_slack_and_the_api_at_once_one_wins_the_other_learns_who(
    agents: AgentChannel,
) -> None:
    # The agent's name is known from an earlier handoff: the click goes straight to the desk.
    waiting(agents)
    agents.click(CLAIM_LABEL, user=SATO)
    _, handoff = waiting(agents)
    shown = agents.card()
    body = agents.events.block_actions(SATO, shown, shown.button(CLAIM_LABEL))
    headers = agents.events.headers(body, content_type="application/x-www-form-urlencoded")
    app = agents.app

    async def both() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            click, claim = await asyncio.gather(
                client.post("/slack/events", content=body.encode(), headers=headers),
                client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako")),
            )
        await app.runtime.worker.idle()
        return click, claim

    click, claim = app.run(both)
    app.settle()

    assert click.status_code == 200
    holder = agents.handoff(handoff)
    # Which one wins is the race's; either way one holds it and the other knows who.
    if claim.status_code == 200:  # the console agent was first
        assert holder.agent == "hanako"
        assert agents.told(SATO) == ["花子さんが対応中です。"]
        assert "*対応中:* 花子" in shown.shown_text() and shown.buttons() == []
    else:
        assert claim.status_code == 409
        detail = claim.json()
        assert (detail["agent"], detail["agent_name"]) == (f"slack:{SATO}", "佐藤")
        assert holder.agent == f"slack:{SATO}" and agents.told(SATO) == []
    assert len(agents.cards()) == 2


def test_when_slack_claims_first_the_api_learns_who(agents: AgentChannel) -> None:
    _, handoff = waiting(agents)
    agents.click(CLAIM_LABEL, user=SATO)

    late = agents.app.client.post(
        f"/api/v1/handoffs/{handoff}/claim", headers=agents.app.api("hanako")
    )

    assert late.status_code == 409
    detail = late.json()
    assert (detail["error"], detail["agent"], detail["agent_name"]) == (
        "already_claimed",
        f"slack:{SATO}",
        "佐藤",
    )


def test_when_the_console_claims_first_the_slack_agent_is_told(agents: AgentChannel) -> None:
    _, handoff = waiting(agents)
    shown = agents.card()
    take_over = shown.button(CLAIM_LABEL)
    app = agents.app
    claimed = app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))
    assert claimed.status_code == 200
    app.settle()
    assert "*対応中:* 花子" in shown.shown_text() and shown.buttons() == []
    assert "花子さんが対応を始めました" in agents.thread()[-1]

    agents.click_button(shown, take_over, user=SATO)

    assert agents.told(SATO) == ["花子さんが対応中です。"]
    assert agents.handoff(handoff).agent == "hanako"


# ---------------------------------------------------------------- mirrored and other moves


def test_the_consoles_words_and_the_users_cancel_show_in_the_thread(
    agents: AgentChannel,
) -> None:
    app = agents.app
    session, handoff = waiting(agents)
    app.client.post(
        f"/api/v1/handoffs/{handoff}/notes", json={"text": "要確認"}, headers=app.api("hanako")
    )
    app.settle()
    assert agents.thread()[-1] == "📝 メモ（花子・API）ユーザーには見えません\n要確認"

    app.say(session, "ボットに戻る")

    shown = agents.card()
    assert "*取り消し:* ユーザーがボットに戻りました" in shown.shown_text()
    assert shown.buttons() == []
    assert agents.thread()[-1] == "ユーザーが依頼を取り消して、ボットとの会話に戻りました。"
    agents.click_button(shown, {**_claim_button(handoff)}, user=SATO)  # a stale card elsewhere
    assert "もう終わっています" in agents.told(SATO)[-1]
    assert agents.handoff(handoff).status is HandoffStatus.CANCELLED


def test_console_replies_are_mirrored_into_the_thread(agents: AgentChannel) -> None:
    app = agents.app
    _, handoff = waiting(agents)
    app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))
    app.client.post(
        f"/api/v1/handoffs/{handoff}/messages", json={"text": "花子です"}, headers=app.api("hanako")
    )
    app.settle()
    assert agents.thread()[-1] == "💬 花子・API → ユーザー\n花子です"


def test_a_retried_reply_reaches_the_user_once(agents: AgentChannel) -> None:
    session, _ = waiting(agents)
    agents.click(CLAIM_LABEL, user=SATO)
    ts = agents.reply("一度だけ届きます", user=SATO, retry=3)
    # The same message mentioning the bot also arrives as app_mention: still one reply.
    mention = agents.events.mention(
        SATO, AGENTS, "一度だけ届きます", ts, thread_ts=agents.card().ts
    )
    agents.post(agents.events.event_callback(mention))

    said = [text for sender, text in web_lines(agents, session) if sender == "agent"]
    assert said == ["一度だけ届きます"]
    rows = agents.app.run(lambda: _inbox_ids(agents))
    assert rows.count(f"{AGENTS}:{ts}") == 1


def test_agents_own_threads_and_top_level_chatter_are_not_recorded(
    agents: AgentChannel,
) -> None:
    waiting(agents)
    before = agents.app.run(lambda: _inbox_ids(agents))
    chatter = agents.api.add_user_message(AGENTS, "お昼どうする？", user=SATO)
    agents.post(
        agents.events.event_callback(
            agents.events.channel_message(SATO, AGENTS, chatter.text, chatter.ts)
        )
    )
    answer = agents.api.add_user_message(AGENTS, "カレー", user=SUZUKI, thread_ts=chatter.ts)
    agents.post(
        agents.events.event_callback(
            agents.events.channel_message(
                SUZUKI, AGENTS, answer.text, answer.ts, thread_ts=chatter.ts
            )
        )
    )
    assert agents.app.run(lambda: _inbox_ids(agents)) == before
    assert agents.api.ephemerals() == []


def test_the_thread_mapping_survives_a_restart(tmp_path: Path, api: FakeSlackApi) -> None:
    with agent_app(tmp_path, **slack_settings(api)) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        session, handoff = waiting(world)
        world.click(CLAIM_LABEL, user=SATO)
    with agent_app(tmp_path, **slack_settings(api)) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        world.reply("再起動のあとも届きます", user=SATO)
        assert ("agent", "再起動のあとも届きます") in web_lines(world, session)
        assert len(world.cards()) == 1
        assert world.handoff(handoff).status is HandoffStatus.CLAIMED


def test_an_agent_request_recorded_before_a_stop_is_acted_on_after_it(
    tmp_path: Path, api: FakeSlackApi
) -> None:
    with agent_app(tmp_path, **slack_settings(api)) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        session, handoff = waiting(world)
        world.click(CLAIM_LABEL, user=SATO)
        card_ts = world.card().ts
        database = app.runtime.settings.database_url
    said = api.add_user_message(AGENTS, "止まる前に書きました", user=SATO, thread_ts=card_ts)
    request = AgentRequest(
        event_id=f"{AGENTS}:{said.ts}",
        address=address(AGENTS, card_ts),
        occurred_at=datetime.now(UTC),
        user=SATO,
        act=AgentPost(
            channel=AGENTS, thread_ts=card_ts, ts=said.ts, text=said.text, handoff_id=handoff
        ),
    )

    async def acknowledged_not_processed() -> None:
        store = await SqlStore.open(database)
        try:
            await store.record_event(
                channel="slack",
                event_id=request.event_id,
                address=request.address,
                payload=request.model_dump(mode="json"),
                occurred_at=request.occurred_at,
            )
        finally:
            await store.close()

    asyncio.run(acknowledged_not_processed())
    with agent_app(tmp_path, **slack_settings(api)) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        app.settle()
        assert ("agent", "止まる前に書きました") in web_lines(world, session)


def test_agent_names_are_looked_up_once_and_fall_back_when_slack_fails(
    agents: AgentChannel,
) -> None:
    waiting(agents)
    agents.click(CLAIM_LABEL, user=SATO)
    agents.reply("一通目", user=SATO)
    agents.reply("二通目", user=SATO)
    assert len(agents.api.calls_to("users.info")) == 1

    agents.api.fail_next("users.info", error="ratelimited")
    names = SlackAgentNames(client=_client(agents))
    ref = agents.app.run(lambda: names.ref(SUZUKI))
    assert ref == AgentRef(id=f"slack:{SUZUKI}", name="担当者", via="slack")
    assert agents.app.run(lambda: names.ref(SUZUKI)).name == "鈴木花"  # asked again


def test_a_channel_name_instead_of_its_id_turns_the_agent_channel_off(
    tmp_path: Path, api: FakeSlackApi, caplog: pytest.LogCaptureFixture
) -> None:
    with agent_app(tmp_path, **slack_settings(api, slack_agent_channel="#agents")) as app:
        world = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        waiting(world)
        assert api.calls_to("chat.postMessage") == []
    assert "SLACK_AGENT_CHANNEL must be the channel's id" in caplog.text


def test_the_manifest_asks_for_what_the_agent_channel_needs() -> None:
    manifest = yaml.safe_load((ROOT / "slack" / "manifest.yaml").read_text(encoding="utf-8"))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"channels:history", "groups:history", "chat:write", "users:read"} <= scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"message.channels", "message.groups"} <= events


# ---------------------------------------------------------------- pure parts


def test_parse_agent_takes_card_clicks_and_thread_replies_only() -> None:
    events = SlackEvents("secret")
    shown = Posted(channel=AGENTS, ts="1700000001.000001", text="card", blocks=[])
    button = {"action_id": "yarigai.agent.claim", "text": {"type": "plain_text", "text": "x"}}
    form = events.block_actions(SATO, shown, {**button, "value": "12"}, action_ts="1700000002.5")
    click = parse_agent(_payload(form), agent_channel=AGENTS, bot_user_id=BOT_USER_ID)
    assert click is not None and click.user == SATO
    assert click.act == AgentClick(
        action="claim", handoff_id=12, channel=AGENTS, card_ts="1700000001.000001"
    )
    assert click.event_id == f"agent-click:{SATO}:1700000002.5"
    assert click.address == f"agents:{AGENTS}:1700000001.000001"
    user_button = {**button, "action_id": "yarigai.choice.0", "value": "{}"}
    form = events.block_actions(SATO, shown, user_button)
    assert parse_agent(_payload(form), agent_channel=AGENTS, bot_user_id=BOT_USER_ID) is None

    def body(event: dict[str, Any]) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(events.event_callback(event))
        return parsed

    thread = "1700000001.000001"
    reply = events.channel_message(
        SATO, AGENTS, "<@UBOT0001> ok &amp; <https://a.jp|a>", "5.1", thread_ts=thread
    )
    parsed = parse_agent(body(reply), agent_channel=AGENTS, bot_user_id=BOT_USER_ID)
    assert parsed is not None and parsed.event_id == f"{AGENTS}:5.1"
    assert parsed.act == AgentPost(
        channel=AGENTS, thread_ts=thread, ts="5.1", text="ok & a (https://a.jp)"
    )
    broadcast = {**reply, "subtype": "thread_broadcast"}
    assert parse_agent(body(broadcast), agent_channel=AGENTS, bot_user_id=BOT_USER_ID) is not None
    ignored = [
        events.channel_message(SATO, AGENTS, "top level", "5.2"),
        events.channel_message(SATO, "C0OTHER01", "elsewhere", "5.3", thread_ts=thread),
        {**reply, "bot_id": BOT_ID},
        {**reply, "subtype": "message_changed"},
        {**reply, "user": BOT_USER_ID},
        {**reply, "text": f"<@{BOT_USER_ID}>"},
    ]
    for event in ignored:
        assert parse_agent(body(event), agent_channel=AGENTS, bot_user_id=BOT_USER_ID) is None


def test_agent_text_keeps_lines_and_link_addresses() -> None:
    raw = (
        "おはようございます。\n\n資料です: <https://example.jp/a|こちら>\n<https://example.jp/b>"
        "  \n<http://example.jp|example.jp> &lt;必読&gt;"
    )
    assert agent_text(raw, bot_user_id=BOT_USER_ID) == (
        "おはようございます。\n\n資料です: こちら (https://example.jp/a)\nhttps://example.jp/b"
        "\nexample.jp <必読>"
    )


@pytest.mark.parametrize("status", list(HandoffStatus))
def test_cards_keep_slacks_limits_in_every_status(status: HandoffStatus) -> None:
    long_answers = [{"question": f"質問{i}" * 10, "answer": "答え<&>" * 40} for i in range(60)]
    handoff = Handoff(
        id=7,
        conversation_id=1,
        key=ConversationKey(channel=Channel.LINE, address="U" + "0" * 32),
        status=status,
        reason="相談希望",
        summary={"answers": long_answers, "outcome": {"title": "まとめ", "fields": []}},
        requested_at=datetime(2025, 4, 1, 1, 0, tzinfo=UTC),
        agent=f"slack:{SATO}" if status is not HandoffStatus.WAITING else None,
        agent_name="佐藤" if status is not HandoffStatus.WAITING else None,
    )
    rendered = card(handoff, link=f"{PUBLIC_URL}/console/handoffs/7")
    assert block_kit_errors(list(rendered.blocks)) == []
    assert "答え&lt;&amp;&gt;" in json.dumps(rendered.blocks, ensure_ascii=False)
    for line in (
        user_said(handoff, "y" * 7000),
        agent_said(_stored("note", "z" * 5000), AgentRef(id="a", name="A", via="console")),
    ):
        assert block_kit_errors(list(line.blocks)) == []


def test_config_reads_the_settings() -> None:
    settings = Settings(slack_agent_channel=" G0PRIV001 ", slack_agent_users=" U1 ,, U2,")
    config = AgentChannelConfig.from_settings(settings)
    assert config == AgentChannelConfig(channel="G0PRIV001", users=frozenset({"U1", "U2"}))
    assert config.allows("U1") and not config.allows("U3") and config.link(3) is None
    anyone = AgentChannelConfig.from_settings(Settings(slack_agent_channel="C1"))
    assert anyone is not None and anyone.allows("U3")
    assert AgentChannelConfig.from_settings(Settings()) is None


# ---------------------------------------------------------------- helpers


def _payload(form: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(parse_qs(form)["payload"][0])
    return payload


def _claim_button(handoff: int) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": "yarigai.agent.claim",
        "text": {"type": "plain_text", "text": CLAIM_LABEL},
        "value": str(handoff),
    }


def _stored(sender: str, text: str) -> StoredMessage:
    return StoredMessage.model_validate(
        {
            "id": 1,
            "direction": "out",
            "sender": sender,
            "text": text,
            "body": {},
            "created_at": datetime(2025, 4, 1, tzinfo=UTC),
        }
    )


async def _inbox_ids(agents: AgentChannel) -> list[str]:
    async with agents.app.runtime.store.engine.connect() as connection:
        rows = await connection.execute(sa.select(inbox.c.event_id).order_by(inbox.c.id))
        return [row.event_id for row in rows]


def _client(agents: AgentChannel) -> Any:
    return agents.app.client.app.state.runtime.slack.bolt.client  # type: ignore[attr-defined]


# ---------------------------------------------------------------- saved replies


def test_a_saved_reply_by_keyword_in_the_thread_goes_to_the_user_filled_in(
    tmp_path: Path, api: FakeSlackApi
) -> None:
    with agent_app(tmp_path, **slack_settings(api), agency_name="やりがいキャリア") as app:
        agents = AgentChannel(app=app, api=api, events=SlackEvents(SIGNING_SECRET))
        replies = CannedReplyStore(engine=app.runtime.store.engine)
        body = (
            "担当の{{name}}です。{{role}}のお仕事、おつかれさまです。{{agency}}の面談は無料です。"
        )
        app.run(lambda: replies.save("挨拶", body, by="hanako"))
        session = app.web_user()
        app.say(session, "経理")
        app.say(session, "担当者と話したい")
        agents.click(CLAIM_LABEL, user=SATO)
        assert "`!名前` で定型文を送れます" in agents.thread()[-1]

        agents.reply("!挨拶", user=SATO)
        agents.reply("！ない", user=SATO)

        said = [text for sender, text in web_lines(agents, session) if sender == "agent"]
        assert said == [
            "担当の佐藤です。経理のお仕事、おつかれさまです。やりがいキャリアの面談は無料です。"
        ]
        assert agents.told(SATO)[-1] == (
            "「ない」という定型文はありません。この返信はユーザーに届いていません。"
        )
