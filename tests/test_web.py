"""The web chat through the real app: page, JSON API, ops endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.app import create_app
from bot.config import Settings

FLOWS = Path(__file__).parent / "flows"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "mini.yaml").write_text(
        (FLOWS / "mini.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", flows_dir=flows, default_flow="mini"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _texts(reply: dict) -> list[str]:
    return [m.get("text") or m.get("title") for m in reply["messages"]]


def test_page_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "やりがい相談チャット" in page.text
    assert "/api/chat/sessions" in page.text


def test_whole_conversation_by_taps_and_text(client: TestClient) -> None:
    started = client.post("/api/chat/sessions", json={}).json()
    session = started["session"]
    assert _texts(started) == ["こんにちは、テスト社です", "お仕事は？"]
    question = started["messages"][-1]
    assert [c["label"] for c in question["choices"]] == ["経理", "人事"]

    url = f"/api/chat/sessions/{session}/messages"
    reply = client.post(url, json={"text": "会計をやってます"}).json()
    assert reply["messages"][-1]["state"] == "pains"
    reply = client.post(url, json={"choice": "boring", "state": "pains", "label": "単調"}).json()
    assert reply["messages"][-1]["choices"][0]["selected"] is True
    reply = client.post(url, json={"choice": "__done__", "state": "pains"}).json()
    card = next(m for m in reply["messages"] if m["type"] == "card")
    assert {"label": "職種", "value": "経理"} in card["fields"]
    assert "経理なら自動化がおすすめ" in _texts(reply)

    history = client.get(url, params={"after": 0}).json()
    assert history["mode"] == "bot"
    assert any(m.get("text") == "会計をやってます" for m in history["messages"])


def test_agent_request_silences_the_bot(client: TestClient) -> None:
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"
    reply = client.post(url, json={"text": "担当者"}).json()
    assert reply["mode"] == "waiting"
    assert _texts(reply)[0] == "担当者を呼びます"
    assert reply["messages"][-1]["choices"] == [  # how long it takes, and the way back
        {"id": "__bot__", "label": "ボットに戻る", "selected": False}
    ]
    quiet = client.post(url, json={"text": "まだですか"}).json()
    assert quiet["messages"] == []
    assert quiet["mode"] == "waiting"


def test_bad_requests_are_refused_clearly(client: TestClient) -> None:
    assert (
        client.post(
            "/api/chat/sessions/not-a-session-id-xxxx/messages", json={"text": "a"}
        ).status_code
        == 404
    )
    assert client.post("/api/chat/sessions/bad!/messages", json={"text": "a"}).status_code == 422
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"
    assert client.post(url, json={}).status_code == 422
    assert (
        client.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["flows"] == ["mini"]
    client.post("/api/chat/sessions", json={})
    metrics = client.get("/metrics").text
    assert 'yarigai_conversations{state="role"} 1.0' in metrics
    assert "yarigai_handoffs_waiting 0.0" in metrics
    assert "yarigai_turn_seconds_bucket" in metrics
