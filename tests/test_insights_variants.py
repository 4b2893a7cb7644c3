"""A/B variants and the `insights:` section: lint errors naming file, line and what is wrong;
the deterministic assignment; a web chat run in its variant, kept, with every fact saying so."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient

from bot.config import Settings
from bot.flows.lint import lint
from bot.flows.loader import load_flow, parse_flow
from bot.flows.variants import assign, resolve
from bot.http.app import create_app

FLOWS = Path(__file__).parent / "flows"
MINI = (FLOWS / "mini.yaml").read_text(encoding="utf-8")
INSIGHTS = """\
insights:
  funnel:
    - {id: started, label: 開始, enter: [hello]}
    - {id: role, label: 職種, answer: role}
    - {id: done, label: まとめ, enter: [summary]}
  cross: [role, pains]
"""
VARIANTS = """\
variants:
  - {id: a, weight: 1}
  - id: b
    weight: 1
    states:
      role:
        ask:
          text: いまのお仕事は、どれに近いですか？
          slot: role
          choices:
            - {id: keiri, label: 経理, keywords: [経理, 会計]}
            - {id: jinji, label: 人事}
        next: pains
"""


def lint_text(text: str) -> list[str]:
    return [str(p) for p in lint(parse_flow(text, path="f.yaml"))]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_flow_with_insights_and_variants_is_clean() -> None:
    assert lint_text(MINI + INSIGHTS + VARIANTS) == []


def test_a_variant_is_linted_like_the_flow_itself() -> None:
    broken = VARIANTS.replace("        next: pains", "        next: painz")
    text = MINI + broken
    problems = lint_text(text)
    assert (
        f"f.yaml:{line_of(text, 'next: painz')}:15: variant 'b': "
        "state 'role' goes to unknown state 'painz'"
    ) in problems
    # and what follows from it in that variant: the states it no longer reaches
    assert (
        f"f.yaml:{line_of(text, '  pains:')}:3: variant 'b': state 'pains' is unreachable from 'hello'"
        in problems
    )
    assert all(": variant 'b': " in p for p in problems)


def test_variants_themselves() -> None:
    text = MINI + VARIANTS.replace("      role:", "      rol:").replace("id: b", "id: a")
    assert lint_text(text) == [
        f"f.yaml:{line_of(text, 'variants:') + 2}:9: variant id 'a' is used twice",
        f"f.yaml:{line_of(text, 'rol:')}:7: variant 'a' replaces 'rol', which the flow does not have",
        f"f.yaml:{line_of(text, 'rol:')}:7: variant 'a': state 'rol' is unreachable from 'hello'",
    ]
    one = MINI + "variants:\n  - {id: a, weight: 0}\n"
    assert lint_text(one) == [
        f"f.yaml:{line_of(one, 'variants:')}:1: one variant is no test: declare two or more",
        f"f.yaml:{line_of(one, 'variants:')}:1: every variant has weight 0: nobody would get the flow",
    ]


def test_the_insights_section_names_what_exists() -> None:
    text = MINI + (
        "insights:\n"
        "  funnel:\n"
        "    - {id: started, label: 開始, answer: role}\n"
        "    - {id: x, label: X, enter: [nowhere]}\n"
        "    - {id: y, label: Y, answer: summary}\n"
        "  cross: [role, hello]\n"
        "  results:\n"
        "    - {id: r, label: R, state: summary, slot: fit}\n"
    )
    base = line_of(text, "insights:")
    assert lint_text(text) == [
        f"f.yaml:{base + 2}:7: the first funnel step 'started' begins runs: give it 'enter'",
        f"f.yaml:{base + 3}:33: funnel step 'x' enters unknown state 'nowhere'",
        f"f.yaml:{base + 4}:33: funnel step 'y' names 'summary', which asks no question",
        f"f.yaml:{base + 5}:17: cross names 'hello', which asks no question",
        f"f.yaml:{base + 7}:47: result 'r': state 'summary' does not set slot 'fit'",
    ]


def test_the_career_flow_declares_its_funnel() -> None:
    career = load_flow(Path(__file__).resolve().parents[1] / "flows" / "career.yaml")
    assert career.spec.insights is not None
    assert [s.id for s in career.spec.insights.funnel] == [
        "started", "role", "frustrations", "fit", "advice", "summary",
        "agent_asked", "agent_talked", "booked",
    ]  # fmt: skip


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    flow = parse_flow(MINI + VARIANTS.replace("weight: 1}", "weight: 3}"), path="f.yaml")
    variants = resolve(flow)
    assert [v.id for v in variants] == ["a", "b"]
    assert variants[1].flow.spec.states["role"].ask.text.startswith("いまのお仕事")  # type: ignore[union-attr]
    assert variants[0].flow.spec.states["role"].ask.text == "お仕事は？"  # type: ignore[union-attr]
    picks = [assign(variants, flow="mini", channel="line", address=f"U{i}").id for i in range(4000)]
    again = [assign(variants, flow="mini", channel="line", address=f"U{i}").id for i in range(4000)]
    assert picks == again
    share = Counter(picks)["a"] / len(picks)
    assert 0.72 < share < 0.78  # weights 3 : 1


def test_a_web_chat_runs_in_its_variant_and_keeps_it(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "mini.yaml").write_text(MINI + INSIGHTS + VARIANTS, encoding="utf-8")
    variants = resolve(load_flow(flows / "mini.yaml"))
    database = tmp_path / "db.sqlite"
    settings = Settings(database_url=f"sqlite:///{database}", flows_dir=flows, default_flow="mini")
    seen: dict[str, str] = {}
    with TestClient(create_app(settings)) as client:
        for _ in range(40):
            session = client.post("/api/chat/sessions", json={}).json()["session"]
            url = f"/api/chat/sessions/{session}/messages"
            first = client.post(url, json={"text": "こんにちは"}).json()
            expected = assign(variants, flow="mini", channel="web", address=session).id
            question = first["messages"][-1]["text"]
            assert question == (
                "お仕事は？" if expected == "a" else "いまのお仕事は、どれに近いですか？"
            )
            client.post(url, json={"choice": "keiri", "state": "role"})
            client.post(url, json={"choice": "boring", "state": "pains"})
            client.post(url, json={"choice": "__done__", "state": "pains"})
            seen[session] = expected
            if len(set(seen.values())) == 2 and len(seen) >= 4:
                break
    assert set(seen.values()) == {"a", "b"}
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT c.address, c.variant, f.variant, f.kind, f.value FROM facts f "
            "JOIN conversations c ON c.id = f.conversation_id"
        ).fetchall()
    for address, kept, recorded, _, _ in rows:
        assert kept == recorded == seen[address]
    steps = Counter((recorded, value) for _, _, recorded, kind, value in rows if kind == "step")
    for variant in ("a", "b"):
        n = sum(1 for v in seen.values() if v == variant)
        assert (
            steps[(variant, "started")] == steps[(variant, "role")] == steps[(variant, "done")] == n
        )


def test_the_insights_page_refuses_bad_periods_clearly(tmp_path: Path) -> None:
    """Through the real console: dates, channel, flow and table names that are not there get a
    clear 4xx, in the one error shape; a good period answers, and a CSV of every table."""
    from agent_app import agent_app
    from test_console import sign_in

    flows = tmp_path / "declared"
    flows.mkdir()
    (flows / "mini.yaml").write_text(MINI + INSIGHTS, encoding="utf-8")
    (flows / "plain.yaml").write_text(MINI.replace("flow: mini", "flow: plain"), encoding="utf-8")
    with agent_app(tmp_path, flows_dir=flows) as served:
        served.add_agent("boss", "管理者", admin=True)
        client = served.client
        sign_in(client, "boss")
        page = client.get(
            "/console/insights", params={"since": "2026-12-01", "until": "2026-12-07"}
        )
        assert page.status_code == 200 and "ファネル" in page.text
        for params, status, words in [
            ({"since": "2026-12-08", "until": "2026-12-07"}, 422, "'since' is after 'until'"),
            ({"since": "2024-01-01", "until": "2026-12-07"}, 422, "at most 366 days"),
            ({"since": "yesterday"}, 422, "since"),
            ({"channel": "fax"}, 422, "unknown channel 'fax'"),
            ({"flow": "nope"}, 422, "unknown flow 'nope'"),
        ]:
            answer = client.get("/console/insights", params=params)
            assert answer.status_code == status, (params, answer.text)
            assert words in answer.text and answer.json()["error"], answer.text
        assert client.get("/console/insights/nothing.csv").status_code == 404
        for name in ("funnel", "dropoff", "cross", "typed", "daily", "outcomes"):
            csv_answer = client.get(f"/console/insights/{name}.csv")
            assert csv_answer.status_code == 200, name
            assert csv_answer.headers["content-type"].startswith("text/csv")
            assert csv_answer.text.startswith("\ufeff")
        # A flow that declares no funnel says so, and has no tables.
        plain = client.get("/console/insights", params={"flow": "plain"})
        assert plain.status_code == 200 and "insights:" in plain.text
        assert (
            client.get("/console/insights/funnel.csv", params={"flow": "plain"}).status_code == 404
        )


def test_a_second_file_can_be_a_variant_of_the_first(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bot.cli.flows import flows as flows_command
    from bot.flows.loader import FlowErrors, load_flows

    base = MINI + "variants:\n  - {id: a, weight: 1}\n  - {id: b, weight: 1, file: mini_b.yaml}\n"
    (tmp_path / "mini.yaml").write_text(base, encoding="utf-8")
    worded = MINI.replace("text: お仕事は？", "text: いまのお仕事は、どれに近いですか？")
    (tmp_path / "mini_b.yaml").write_text(worded, encoding="utf-8")
    loaded = load_flows(tmp_path)
    assert list(loaded) == ["mini"]  # the variant file is no flow of its own
    variants = resolve(loaded["mini"])
    assert [v.id for v in variants] == ["a", "b"]
    assert variants[1].flow.spec.states["role"].ask.text.startswith("いまのお仕事")  # type: ignore[union-attr]
    checked = CliRunner().invoke(flows_command, ["check", str(tmp_path)])
    assert checked.exit_code == 0, checked.output
    assert "a variant, checked with the flow that names it" in checked.output

    # Its problems name its own file and line; another flow id is refused.
    broken = worded.replace("    next: pains", "    next: painz")
    (tmp_path / "mini_b.yaml").write_text(broken, encoding="utf-8")
    checked = CliRunner().invoke(flows_command, ["check", str(tmp_path)])
    assert checked.exit_code == 1
    assert (
        f"mini_b.yaml:{line_of(broken, 'next: painz')}:11: variant 'b': "
        "state 'role' goes to unknown state 'painz'"
    ) in checked.output
    (tmp_path / "mini_b.yaml").write_text(
        worded.replace("flow: mini", "flow: other"), encoding="utf-8"
    )
    try:
        load_flows(tmp_path)
    except FlowErrors as error:
        assert "variant 'b': mini_b.yaml is flow 'other', not 'mini'" in str(error)
    else:
        raise AssertionError("a variant of another flow id was accepted")
