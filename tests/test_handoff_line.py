"""A LINE user talks to an agent: signed webhooks in, the agent API, pushes out to a fake LINE
API that checks every request against LINE's OpenAPI spec; the real app under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from agent_app import password_hash
from fakes.line_api import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    FakeLineApi,
    Webhooks,
    new_user_id,
    require_spec,
)
from fakes.served import serving_app

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.config import Settings
from bot.http.app import create_app
from bot.http.console.auth import new_token
from bot.store import AgentStore
from bot.wiring import Runtime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
async def served(tmp_path: Path, fake: FakeLineApi) -> AsyncIterator[tuple[str, Runtime]]:
    channels = [LineChannel(retry_delays=(0.02, 0.05))]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=REPO / "flows",
        default_flow="career",
        line_channel_secret=CHANNEL_SECRET,
        line_channel_access_token=ACCESS_TOKEN,
        line_api_base_url=fake.url,
        agent_hours="always",
        session_secret="test",
    )
    app = create_app(settings, channels=channels)
    async with serving_app(app) as url:
        yield url, app.state.runtime


async def test_line_user_asks_agent_takes_over_replies_by_push_and_hands_back(
    served: tuple[str, Runtime], fake: FakeLineApi
) -> None:
    url, runtime = served
    token, hashed = new_token()
    agents = AgentStore(engine=runtime.store.engine)
    await agents.add("hanako", password_hash=password_hash(), display_name="担当 花子")
    await agents.add_token("hanako", token_hash=hashed)
    hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
    user = new_user_id()

    async def send(event: dict[str, object]) -> None:
        assert (await hooks.send(event)).status_code == 200
        await runtime.worker.idle()

    await send(hooks.follow(user))
    await send(hooks.text(user, "担当者と話したい"))
    asked = fake.last(user)
    assert "ふだんは15分ほどで担当者からお返事します" in asked.text
    assert [b["label"] for b in asked.buttons] == ["ボットに戻る"]

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as api:
        [queued] = (await api.get("/api/v1/handoffs")).json()
        assert queued["channel"] == "line" and "address" not in queued
        handoff = f"/api/v1/handoffs/{queued['id']}"
        assert (await api.post(f"{handoff}/claim")).status_code == 200

        seen_before = len(fake.seen(user))
        await send(hooks.text(user, "転職も考えています"))
        assert len(fake.seen(user)) == seen_before  # the bot stays silent
        transcript = (await api.get(handoff)).json()["transcript"]
        assert transcript[-1]["text"] == "転職も考えています"

        sent = await api.post(f"{handoff}/messages", json={"text": "担当の花子です。"})
        assert sent.status_code == 201, sent.text
        pushed = fake.last(user)
        assert (pushed.via, pushed.text) == ("push", "担当の花子です。")
        assert pushed.message["sender"] == {"name": "担当 花子"}

        released = await api.post(f"{handoff}/release")
        assert released.status_code == 200, released.text

    resumed = fake.last(user)
    assert resumed.via == "push"
    assert (
        resumed.text
        == "おかえりなさい。担当者とのお話はここまでです。続けるときは、下から選んでくださいね。"
    )
    assert "参考になった" in [b["label"] for b in resumed.buttons]
    await send(hooks.tap(user, resumed.button("参考になった")))
    assert any("よかったです" in text for text in fake.texts(user)[-4:])
