"""A LINE user and a Slack agent, end to end: the real app under uvicorn on 127.0.0.1, signed
LINE webhooks and signed Slack requests in, the official SDKs talking to a fake LINE API (checked
against LINE's OpenAPI spec) and a fake Slack Web API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
)
from fakes.served import serving_app
from fakes.slack_api import BOT_ID, FakeSlackApi, Posted, SlackEvents
from pydantic import SecretStr

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.channels.slack.adapter import PATH as SLACK_PATH
from bot.channels.slack.adapter import SlackChannel
from bot.channels.slack.agents.blocks import CLAIM_LABEL, release_label
from bot.config import Settings
from bot.http.app import create_app
from bot.store import HandoffOutcome, HandoffStatus
from bot.wiring import Runtime

REPO = Path(__file__).resolve().parents[1]
SIGNING_SECRET = "fake-signing-secret-e2e"
AGENTS = "G0AGENTS1"  # a private channel, as the docs advise
SATO = "U0SATO001"
RESUMED = "おかえりなさい。担当者とのお話はここまでです。続けるときは、下から選んでくださいね。"


@dataclass
class Served:
    """The app, LINE's and Slack's sides of it, and the moves the test makes."""

    url: str
    runtime: Runtime
    line: FakeLineApi
    hooks: Webhooks
    slack: FakeSlackApi
    events: SlackEvents

    async def settle(self) -> None:
        await self.runtime.worker.idle()

    async def user_says(self, user: str, text: str) -> None:
        assert (await self.hooks.send(self.hooks.text(user, text))).status_code == 200
        await self.settle()

    async def user_taps(self, user: str, label: str) -> None:
        tap = self.hooks.tap(user, self.line.last(user).button(label))
        assert (await self.hooks.send(tap)).status_code == 200
        await self.settle()

    async def to_slack(self, body: str, *, form: bool = False, retry: int | None = None) -> None:
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        headers = self.events.headers(body, retry=retry, content_type=content_type)
        async with httpx.AsyncClient(base_url=self.url) as client:
            answer = await client.post(SLACK_PATH, content=body.encode(), headers=headers)
        assert answer.status_code == 200, answer.text
        await self.settle()

    async def click(self, label: str, *, user: str = SATO) -> None:
        card = self.card()
        await self.to_slack(self.events.block_actions(user, card, card.button(label)), form=True)

    async def agent_writes(self, text: str, *, user: str = SATO, retry: bool = False) -> None:
        card = self.card()
        said = self.slack.add_user_message(AGENTS, text, user=user, thread_ts=card.ts)
        event = self.events.channel_message(user, AGENTS, text, said.ts, thread_ts=card.ts)
        body = self.events.event_callback(event)
        await self.to_slack(body)
        if retry:  # Slack did not see our 200 in time and sends the same event again
            await self.to_slack(body, retry=1)

    def card(self) -> Posted:
        cards = [m for m in self.slack.messages(AGENTS) if m.bot_id == BOT_ID]
        assert len(cards) == 1, cards
        return cards[0]

    def thread(self) -> list[str]:
        card = self.card()
        return [m.shown_text() for m in self.slack.messages(AGENTS, card.ts) if m.bot_id == BOT_ID]


@pytest.fixture
def line() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        # Whatever happened, the bot never sent LINE anything outside the spec.
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
def slack() -> Iterator[FakeSlackApi]:
    users = {SATO: {"name": "sato", "real_name": "佐藤一郎", "profile": {"display_name": "佐藤"}}}
    with FakeSlackApi(users=users) as api:
        yield api


@pytest.fixture
async def served(tmp_path: Path, line: FakeLineApi, slack: FakeSlackApi) -> AsyncIterator[Served]:
    channels = [LineChannel(retry_delays=(0.02, 0.05), loading_after=None), SlackChannel()]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=REPO / "flows",
        default_flow="career",
        line_channel_secret=SecretStr(CHANNEL_SECRET),
        line_channel_access_token=SecretStr(ACCESS_TOKEN),
        line_api_base_url=line.url,
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_bot_token=SecretStr(slack.token),
        slack_api_base_url=slack.base_url,
        slack_agent_channel=AGENTS,
        slack_agent_users=SATO,
        public_url="https://yarigai.example.com",
        agent_hours="always",
        session_secret=SecretStr("test"),
    )
    app = create_app(settings, channels=channels)
    async with serving_app(app) as url:
        yield Served(
            url=url,
            runtime=app.state.runtime,
            line=line,
            hooks=Webhooks(url + WEBHOOK_PATH, fake=line),
            slack=slack,
            events=SlackEvents(SIGNING_SECRET),
        )


async def test_line_user_to_a_slack_agent_and_back_to_the_bot(served: Served) -> None:
    user = new_user_id()
    line = served.line
    assert (await served.hooks.send(served.hooks.follow(user))).status_code == 200
    await served.settle()
    await served.user_taps(user, "経理")
    await served.user_says(user, "毎日同じことの繰り返しで、面接も不安")

    # The user asks for a person: the bot says how long it takes, a card appears for agents.
    await served.user_says(user, "担当者と話したい")
    assert "ふだんは15分ほどで担当者からお返事します" in line.last(user).text
    card = served.card()
    shown = card.shown_text()
    assert "*LINE* のユーザー" in shown
    # The same brief as the console: in words, with the user's own, never slot keys.
    assert "*経理*\n> 毎日同じことの繰り返しで、面接も不安" in shown
    assert "・職種: 経理" in shown and "role" not in shown
    assert "https://yarigai.example.com/console/handoffs/" in shown
    assert [b["text"]["text"] for b in card.buttons()] == [CLAIM_LABEL]

    # An agent takes it over from Slack.
    await served.click(CLAIM_LABEL)
    assert f"*対応中:* <@{SATO}>" in card.shown_text()
    assert [b["text"]["text"] for b in card.buttons()] == [release_label(o) for o in HandoffOutcome]

    # The user's next LINE message appears in the card's thread; the bot stays silent.
    seen = len(line.seen(user))
    await served.user_says(user, "転職も考えていて、迷っています")
    assert served.thread()[-1] == "👤 ユーザー（LINE）\n転職も考えていて、迷っています"
    assert len(line.seen(user)) == seen

    # The agent's thread reply reaches the user by push, once, as the agent, with a retry key.
    pushes = len(line.calls_of("push"))
    await served.agent_writes("担当の佐藤です。お話を聞かせてください。", retry=True)
    [push] = line.calls_of("push")[pushes:]
    assert push.status == 200 and push.retry_key
    [message] = push.body["messages"]
    assert (message["text"], message["sender"]) == (
        "担当の佐藤です。お話を聞かせてください。",
        {"name": "佐藤"},
    )
    assert line.last(user).text == "担当の佐藤です。お話を聞かせてください。"

    # An internal note stays in Slack and the transcript.
    await served.agent_writes("// 転職意向あり。次回は求人の話")
    assert len(line.calls_of("push")) == pushes + 1
    assert line.last(user).text == "担当の佐藤です。お話を聞かせてください。"

    # Hand back: the bot resumes, and says so.
    await served.click(release_label(HandoffOutcome.INFO_ONLY))
    resumed = line.last(user)
    assert (resumed.via, resumed.text) == ("push", RESUMED)
    assert "参考になった" in [b["label"] for b in resumed.buttons]
    assert card.buttons() == [] and "*対応終了（情報提供のみ）:*" in card.shown_text()
    await served.user_taps(user, "参考になった")
    assert any("よかったです" in text for text in line.texts(user)[-4:])

    transcript = await _transcript(served)
    senders = [(line["sender"], line["text"]) for line in transcript]
    assert ("note", "転職意向あり。次回は求人の話") in senders
    assert senders.count(("agent", "担当の佐藤です。お話を聞かせてください。")) == 1


async def _transcript(served: Served) -> list[dict[str, Any]]:
    [handoff] = await served.runtime.desk.handoffs.queue(statuses=(HandoffStatus.RELEASED,))
    lines = await served.runtime.store.transcript(handoff.conversation_id, limit=500)
    return [line.model_dump(mode="json") for line in lines]
