"""`yarigai nlu eval FILE`: accuracy, wrong-confident rate and a confusion table."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
FLOWS = str(ROOT / "flows")

LABELLED = """\
flow: career
states:
  ask_role:
    keiri: [経理です, 会社の帳簿をつけてます]
    jinji: [人事部で採用担当]
    _reject: [今日は寒いね]
  fit_start:
    "yes": [うん]
    "no": [好きじゃない]
"""


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    path = tmp_path / "labelled.yaml"
    path.write_text(LABELLED, encoding="utf-8")
    return path


def test_eval_prints_figures_and_a_confusion_table(labelled: Path) -> None:
    result = CliRunner().invoke(main, ["nlu", "eval", str(labelled), "--flows-dir", FLOWS])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("classifier: use-")
    assert "messages: 6" in lines
    assert "accuracy: 100.0% (6/6; a rejected off-topic message counts as correct)" in lines
    assert "wrong-confident rate: 0.0% (0/6)" in lines
    header = next(line for line in lines if line.startswith("ask_role"))
    assert header.split() == ["ask_role", "keiri", "jinji", "-"]
    assert next(line for line in lines if line.startswith("keiri")).split() == [
        "keiri",
        "2",
        ".",
        ".",
    ]


def test_eval_lists_mistakes_on_request(tmp_path: Path) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text("flow: career\nstates:\n  ask_role:\n    jinji: [経理です]\n", encoding="utf-8")
    args = ["nlu", "eval", str(path), "--flows-dir", FLOWS, "--model", "ngram", "--mistakes"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "classifier: ngram" in result.output
    assert "wrong-confident rate: 100.0% (1/1)" in result.output
    assert "ask_role: '経理です' expected jinji, got keiri [keyword]" in result.output


def test_eval_refuses_an_unknown_flow_or_state(tmp_path: Path) -> None:
    unknown_flow = tmp_path / "a.yaml"
    unknown_flow.write_text("flow: nope\nstates: {}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["nlu", "eval", str(unknown_flow), "--flows-dir", FLOWS])
    assert result.exit_code == 1
    assert "flow 'nope' is not in" in result.output
    unknown_state = tmp_path / "b.yaml"
    unknown_state.write_text("flow: career\nstates:\n  greeting:\n    x: [a]\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["nlu", "eval", str(unknown_state), "--flows-dir", FLOWS])
    assert result.exit_code == 1
    assert "labelled state 'greeting' is not a question of flow 'career'" in result.output
