"""A conversation through the web chat API records the right facts, with the turn and never
the user's words; the Prometheus counters count the same; deleting the user's data deletes them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.config import Settings
from bot.http.app import create_app

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"Authorization": "Bearer metrics-token"}
TYPED_DIRECTION = "今の会社で工夫してみたい"
GIBBERISH = "ぽよぽよぽよ"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    database = tmp_path / "db.sqlite"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        flows_dir=ROOT / "flows",
        default_flow="career",
        metrics_token="metrics-token",
        agent_hours="always",
    )
    with TestClient(create_app(settings)) as client:
        yield client, database


def facts(database: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM facts ORDER BY id").fetchall()
    return [dict(row) for row in rows]


def test_a_web_chat_records_its_facts_as_it_goes(app: tuple[TestClient, Path]) -> None:
    client, database = app
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"

    def tap(choice: str, state: str) -> dict[str, Any]:
        answer = client.post(url, json={"choice": choice, "state": state})
        assert answer.status_code == 200, answer.text
        reply: dict[str, Any] = answer.json()
        return reply

    tap("keiri", "ask_role")
    tap("repetitive", "ask_frustrations")
    assert client.post(url, json={"text": GIBBERISH}).status_code == 200
    tap("growth", "ask_frustrations")
    tap("__done__", "ask_frustrations")
    for state in ("fit_start", "q_support", "q_change", "q_steady", "q_ideas", "q_rules"):
        tap("no" if state in ("fit_start", "q_change") else "yes", state)
    tap("yes", "q_thanks")
    tap("yes", "q_pillar")  # plus 4 (support, steady, rules, pillar), minus 2: good
    reply = client.post(url, json={"text": TYPED_DIRECTION}).json()
    assert reply["messages"], reply

    found = facts(database)
    run_at = {f["run_at"] for f in found}
    assert len(run_at) == 1  # one run, every fact dated from its start
    assert {(f["flow"], f["variant"], f["channel"]) for f in found} == {("career", "", "web")}
    steps = [f["value"] for f in found if f["kind"] == "step"]
    assert steps == ["started", "role", "frustrations", "fit", "advice"]
    answers = [(f["state"], f["value"], f["how"]) for f in found if f["kind"] == "answer"]
    assert answers[:3] == [
        ("ask_role", "keiri", "tapped"),
        ("ask_frustrations", "repetitive,growth", "tapped"),
        ("fit_start", "no", "tapped"),
    ]
    assert answers[-1] == ("ask_direction", "stay", "typed")
    typed = next(f for f in found if f["kind"] == "answer" and f["how"] == "typed")
    assert typed["stage"] == "keyword"
    picks = [(f["value"], f["how"]) for f in found if f["kind"] == "pick"]
    assert picks == [("repetitive", "tapped"), ("growth", "tapped")]
    missed = [(f["state"], f["how"]) for f in found if f["kind"] == "not_understood"]
    assert missed == [("ask_frustrations", "typed")]
    assert [(f["state"], f["value"]) for f in found if f["kind"] == "result"] == [
        ("fit_result", "good")
    ]
    entered = [f["state"] for f in found if f["kind"] == "entered"]
    assert entered[:3] == ["greeting", "ask_role", "ask_frustrations"]
    assert "fit_result" in entered and "ways" in entered
    seconds = [f["seconds"] for f in found if f["kind"] == "answer"][1:]
    assert all(s is not None and s >= 0 for s in seconds)
    # Never what the user wrote.
    everything = " ".join(str(v) for f in found for v in f.values())
    assert GIBBERISH not in everything and TYPED_DIRECTION not in everything

    # An agent asked for: the fact and the step's counter; the funnel counters on /metrics.
    client.post(url, json={"text": "担当者と話したい"})
    found = facts(database)
    assert [f["kind"] for f in found if f["kind"].startswith("handoff")] == ["handoff_requested"]
    metrics = client.get("/metrics", headers=METRICS).text
    version = found[0]["flow_version"]
    labels = f'flow="career",flow_version="{version}",variant=""'
    assert f"yarigai_funnel_starts_total{{{labels}}} 1.0" in metrics
    assert f"yarigai_funnel_handoffs_total{{{labels}}} 1.0" in metrics
    steps_labels = f'flow="career",flow_version="{version}",step="advice",variant=""'
    assert f"yarigai_funnel_steps_total{{{steps_labels}}} 1.0" in metrics


def test_forgetting_the_user_deletes_their_facts(app: tuple[TestClient, Path]) -> None:
    client, database = app
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"
    client.post(url, json={"choice": "keiri", "state": "ask_role"})
    assert facts(database)
    client.post(url, json={"text": "データを削除して"})
    client.post(url, json={"choice": "__forget_yes__", "state": "__forget__"})
    assert facts(database) == []


def test_a_step_counts_once_per_run_and_a_restart_begins_another(
    app: tuple[TestClient, Path],
) -> None:
    client, database = app
    session = client.post("/api/chat/sessions", json={}).json()["session"]
    url = f"/api/chat/sessions/{session}/messages"
    client.post(url, json={"choice": "keiri", "state": "ask_role"})
    client.post(url, json={"text": "戻る"})  # back to the role question
    client.post(url, json={"choice": "jinji", "state": "ask_role"})
    found = facts(database)
    assert [f["value"] for f in found if f["kind"] == "answer"] == ["keiri", "jinji"]
    assert [f["value"] for f in found if f["kind"] == "step"] == ["started", "role"]
    with sqlite3.connect(database) as connection:
        counted = dict(
            connection.execute(
                "SELECT value, sum(n) FROM fact_counts WHERE kind = 'step' GROUP BY value"
            ).fetchall()
        )
    assert counted == {"started": 1, "role": 1}

    client.post(url, json={"choice": "restart"})
    client.post(url, json={"text": "はい"})  # ここまでの答えが消えてしまいますが…: はい
    client.post(url, json={"choice": "soumu", "state": "ask_role"})
    found = facts(database)
    assert len({f["run_at"] for f in found}) == 2
    assert [f["value"] for f in found if f["kind"] == "step"] == [
        "started", "role", "started", "role",
    ]  # fmt: skip
