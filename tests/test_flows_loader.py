"""Loading flow files: every problem names file, line, column and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import FlowError
from bot.flows.loader import FlowErrors, load_flow, load_flows, parse_flow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "flows"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Errors name files relative to the working directory.
    monkeypatch.chdir(ROOT)


def problems(path: str) -> list[str]:
    with pytest.raises(FlowErrors) as caught:
        load_flow(path)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "unknown_target",
            "6:11: state 'advice' goes to unknown state 'advise'",
        ),
        (
            "invalid_yaml",
            "6:8: not valid YAML: expected ',' or ']', but got ':'",
        ),
        (
            "unknown_key",
            "6:11: states.hello.ends: Extra inputs are not permitted",
        ),
        (
            "wrong_type",
            "3:13: max_misses: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "bare_yes",
            "9:16: states.sure.ask.choices.0.id: Input should be a valid string "
            '(YAML reads a bare yes/no/on/off as a boolean: quote it, e.g. "yes")',
        ),
        ("duplicate_key", "7:3: duplicate key 'hello'"),
        ("empty", "1:1: the file is empty"),
    ],
)
def test_a_broken_file_names_file_line_column_and_problem(name: str, expected: str) -> None:
    path = f"tests/flows/broken/{name}.yaml"
    assert problems(path) == [f"{path}:{expected}"]


def test_an_issue_carries_its_location_as_data() -> None:
    with pytest.raises(FlowErrors) as caught:
        load_flow("tests/flows/broken/unknown_target.yaml")
    (issue,) = caught.value.issues
    assert isinstance(issue, FlowError)
    assert (issue.file, issue.line, issue.column) == (
        "tests/flows/broken/unknown_target.yaml",
        6,
        11,
    )
    assert issue.message == "state 'advice' goes to unknown state 'advise'"


def test_a_missing_file_is_one_clear_problem() -> None:
    assert problems("tests/flows/broken/no_such_file.yaml") == [
        "tests/flows/broken/no_such_file.yaml: cannot read: No such file or directory"
    ]


def test_parse_only_skips_the_lint_rules() -> None:
    flow = load_flow("tests/flows/broken/unknown_target.yaml", check=False)
    assert flow.id == "unknown_target"
    assert flow.where(("states", "advice", "next")) == (6, 11)


def test_a_block_value_is_located_at_its_key() -> None:
    flow = parse_flow("flow: f\nstart: a\nstates:\n  a:\n    say: [hi]\n    end: true\n")
    assert flow.where(("states", "a")) == (4, 3)
    assert flow.where(("states", "a", "say", 0)) == (5, 11)
    # Unknown keys fall back to their nearest known ancestor.
    assert flow.where(("states", "a", "ask", "text")) == (4, 3)


def test_the_top_level_must_be_a_mapping() -> None:
    with pytest.raises(FlowErrors) as caught:
        parse_flow("- just\n- a list\n", path="list.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "list.yaml:1:1: (top): Input should be a valid dictionary or instance of FlowSpec"
    ]


def test_the_version_follows_the_text() -> None:
    text = "flow: f\nstart: a\nstates:\n  a:\n    say: [hi]\n    end: true\n"
    assert parse_flow(text).version == parse_flow(text).version
    assert parse_flow(text).version != parse_flow(text.replace("hi", "hello")).version


def test_a_directory_reports_the_problems_of_all_its_files_at_once(tmp_path: Path) -> None:
    good = "flow: same\nstart: a\nstates:\n  a:\n    say: [hi]\n    end: true\n"
    (tmp_path / "a.yaml").write_text(good, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(good, encoding="utf-8")
    (tmp_path / "c.yaml").write_text("", encoding="utf-8")
    with pytest.raises(FlowErrors) as caught:
        load_flows(tmp_path)
    messages = [i.message for i in caught.value.issues]
    assert messages == [
        f"flow id 'same' is also used by {tmp_path / 'a.yaml'}",
        "the file is empty",
    ]


def test_a_directory_without_flows_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(FlowErrors, match="no flow files"):
        load_flows(tmp_path)


def test_every_shipped_flow_loads_without_a_problem() -> None:
    # All lint rules run, so this also proves every state reachable and every target known.
    if not any(p.suffix in {".yaml", ".yml"} for p in SHIPPED.iterdir()):
        return  # no flow written yet
    flows = load_flows(SHIPPED)
    assert flows
