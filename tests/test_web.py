"""The web chat through the real app: page, JSON API, ops endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.config import Settings
from bot.http.app import create_app

FLOWS = Path(__file__).parent / "flows"
METRICS_TOKEN = "metrics-token-for-tests"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "mini.yaml").write_text(
        (FLOWS / "mini.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=flows,
        default_flow="mini",
        metrics_token=METRICS_TOKEN,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _texts(reply: dict) -> list[str]:
    return [m.get("text") or m.get("title") for m in reply["messages"]]


def test_page_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    # Framed by no one, and only its own inline script and style run (by their hashes).
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert policy.count("'sha256-") == 2 and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
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
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    client.post(f"/api/chat/sessions/{session}/messages", json={"text": "会計をやってます"})
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers={"Authorization": "Bearer guess"})
    assert refused.status_code == 401 and "yarigai_" not in refused.text
    metrics = client.get("/metrics", headers=SCRAPER).text
    assert 'yarigai_conversations{state="pains"} 1.0' in metrics
    assert "yarigai_handoffs_waiting 0.0" in metrics
    assert "yarigai_turn_seconds_bucket" in metrics


def test_metrics_are_off_without_a_token(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", flows_dir=FLOWS, default_flow="mini"
    )
    with TestClient(create_app(settings)) as client:
        answer = client.get("/metrics", headers={"Authorization": "Bearer "})
        assert answer.status_code == 404 and "yarigai_" not in answer.text


def test_text_no_store_can_keep_is_refused_and_the_chat_goes_on(client: TestClient) -> None:
    """U+0000 (PostgreSQL refuses it) and lone surrogates (not UTF-8 at all) get 422."""
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"
    assert client.post(url, json={"text": "経理\u0000です"}).status_code == 422
    assert client.post(url, json={"choice": "keiri\u0000"}).status_code == 422
    lone = b'{"text": "\\ud800 hi"}'
    refused = client.post(url, content=lone, headers={"content-type": "application/json"})
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid"
    nul = client.post(url, json={"text": "経理\u0000です"}).json()
    assert "U+0000 or a lone surrogate" in str(nul["details"])
    assert client.post(url, json={"text": "経理です"}).status_code == 200


def test_readyz_and_metrics_report_an_inbox_that_is_not_draining(tmp_path: Path) -> None:
    # WORKER_MODE=separate with no worker running: events are recorded and nobody runs them.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        flows_dir=FLOWS,
        default_flow="mini",
        worker_mode="separate",
        inbox_stall_seconds=60,
        metrics_token=METRICS_TOKEN,
    )
    with TestClient(create_app(settings)) as client:
        store = client.app.state.runtime.store  # type: ignore[attr-defined]
        now = datetime.now(UTC)

        def record(event_id: str, waited: timedelta) -> None:
            client.portal.call(  # type: ignore[union-attr]
                partial(
                    store.record_event,
                    channel="line",
                    event_id=event_id,
                    address="U1",
                    payload={},
                    occurred_at=now - waited,
                    now=now - waited,
                )
            )

        record("fresh", timedelta(seconds=5))
        assert client.get("/readyz").status_code == 200
        record("stuck", timedelta(seconds=90))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "inbox not draining"
        assert ready.json()["oldest_pending_seconds"] >= 90
        metrics = client.get("/metrics", headers=SCRAPER).text
        assert "yarigai_inbox_pending 2.0" in metrics
        assert "yarigai_inbox_failed 0.0" in metrics
        oldest = next(
            line for line in metrics.splitlines() if line.startswith("yarigai_inbox_oldest")
        )
        assert float(oldest.split()[-1]) >= 90
