"""The Mermaid drawing of a flow, and the committed JSON Schema of flow files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from bot.cli.flows import flows
from bot.flows.graph import mermaid
from bot.flows.jsonschema import flow_json_schema, schema_text
from bot.flows.loader import load_flow, parse_flow

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "flows" / "mini.yaml"
COMMITTED_SCHEMA = ROOT / "flows" / "flow.schema.json"


def test_mini_graph_has_a_node_per_state_shaped_by_kind() -> None:
    lines = mermaid(load_flow(MINI)).splitlines()
    assert lines[0] == "flowchart TD"
    for node in (
        's_hello["hello"]',  # pass
        's_role{"role"}',  # question
        's_pains{"pains"}',
        's_handoff{{"handoff"}}',
        's_bye(["bye"])',  # end
    ):
        assert f"    {node}" in lines


def test_mini_graph_edges() -> None:
    lines = mermaid(load_flow(MINI)).splitlines()
    for edge in (
        "flow_start --> s_hello",
        "s_hello --> s_role",
        "s_role --> s_pains",
        "s_pains -->|\"'boring' in pains\"| s_tip_boring",
        's_pains -->|"else"| s_summary',
        "s_summary --> s_bye",
        's_handoff -.->|"handed back"| s_after',
        'any_state -.->|"最初から"| s_hello',
        'any_state -.->|"担当者と話したい"| s_handoff',
    ):
        assert f"    {edge}" in lines
    # The help command only re-asks: it goes nowhere.
    assert not any("ヘルプ" in line for line in lines)


def test_graph_is_deterministic() -> None:
    assert mermaid(load_flow(MINI)) == mermaid(load_flow(MINI))


GOTO_FLOW = """\
flow: g
start: 'q-1'
states:
  'q-1':
    ask:
      text: どう？
      slot: mood
      choices:
        - {id: a, label: 'say "hi"', goto: q_1}
        - {id: b, label: "<b>", goto: q_1}
        - {id: c, label: "#1 {x}", goto: 終わり}
  q_1:
    say: [hi]
    next:
      - if: "mood == 'a' and mood is defined and mood != 'zzz'"
        goto: 終わり
      - goto: 'q-1'
  終わり:
    say: [bye]
    end: true
"""


def test_choice_edges_carry_labels_escaped_and_merged_per_target() -> None:
    text = mermaid(parse_flow(GOTO_FLOW))
    assert '    s_q_1 -->|"say #quot;hi#quot; / #lt;b#gt;"| s_q_1_2' in text
    assert '    s_q_1 -->|"#35;1 #123;x#125;"| s____' in text
    # `next` is never taken when every choice has its own goto.
    assert text.count("s_q_1 -->") == 2


def test_node_ids_are_safe_and_unique_labels_keep_the_names() -> None:
    text = mermaid(parse_flow(GOTO_FLOW))
    assert '    s_q_1{"q-1"}' in text
    assert '    s_q_1_2["q_1"]' in text
    assert '    s____(["終わり"])' in text


def test_long_conditions_are_shortened() -> None:
    text = mermaid(parse_flow(GOTO_FLOW))
    assert "    s_q_1_2 -->|\"mood == 'a' and mood is defin…\"| s____" in text


def test_cli_graph_prints_the_diagram() -> None:
    result = CliRunner().invoke(flows, ["graph", str(MINI)])
    assert result.exit_code == 0, result.output
    assert result.stdout == mermaid(load_flow(MINI))


def test_cli_graph_of_a_broken_file_fails_with_its_location() -> None:
    result = CliRunner().invoke(flows, ["graph", str(ROOT / "tests/flows/broken/empty.yaml")])
    assert result.exit_code == 1
    assert result.stderr.endswith("empty.yaml:1:1: the file is empty\n")


# ---------------------------------------------------------------- JSON Schema


def test_committed_schema_is_up_to_date() -> None:
    committed = COMMITTED_SCHEMA.read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "flows/flow.schema.json is stale: regenerate it with `yarigai flows schema --write`"
    )
    assert json.loads(committed) == flow_json_schema()


def test_schema_is_valid_and_uses_yaml_keys() -> None:
    schema = flow_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    assert "if" in schema["$defs"]["BranchSpec"]["properties"]


def test_schema_accepts_the_mini_flow() -> None:
    data = yaml.safe_load(MINI.read_text(encoding="utf-8"))
    jsonschema.validate(data, flow_json_schema())


def test_schema_refuses_an_unknown_key() -> None:
    data = yaml.safe_load((ROOT / "tests/flows/broken/unknown_key.yaml").read_text("utf-8"))
    with pytest.raises(jsonschema.ValidationError, match="'ends' was unexpected"):
        jsonschema.validate(data, flow_json_schema())


def test_cli_schema_prints_and_writes(tmp_path: Path) -> None:
    printed = CliRunner().invoke(flows, ["schema"])
    assert printed.exit_code == 0
    assert printed.stdout == schema_text()
    written = CliRunner().invoke(flows, ["schema", "--write"], env={"FLOWS_DIR": str(tmp_path)})
    assert written.exit_code == 0, written.output
    assert (tmp_path / "flow.schema.json").read_text(encoding="utf-8") == schema_text()


def test_a_handoff_is_left_only_when_handed_back() -> None:
    text = (
        "flow: h\nstart: h\nstates:\n"
        "  h:\n    handoff: {reason: 相談}\n    next: bye\n"
        "  bye:\n    say: [またね]\n    end: true\n"
    )
    assert '    s_h -.->|"handed back"| s_bye' in mermaid(parse_flow(text))
    assert "s_h -->" not in mermaid(parse_flow(text))
    with_resume = "resume: bye\n" + text.replace("    next: bye\n", "    next: h\n")
    assert mermaid(parse_flow(with_resume)).count("s_h -") == 1
