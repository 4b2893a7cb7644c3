"""Lint rules: each has a failing example naming where; and `yarigai flows check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.flows import flows
from bot.flows.lint import lint
from bot.flows.loader import FlowErrors, load_flow, parse_flow

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "tests/flows/broken"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def problems(path: str) -> list[str]:
    with pytest.raises(FlowErrors) as caught:
        load_flow(path)
    return [str(issue) for issue in caught.value.issues]


def lint_text(text: str) -> list[str]:
    return [str(p) for p in lint(parse_flow(text, path="f.yaml"))]


# ---------------------------------------------------------------- one file per rule


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unknown_target", ["6:11: state 'advice' goes to unknown state 'advise'"]),
        ("unreachable", ["7:3: state 'orphan' is unreachable from 'hello'"]),
        ("dead_end", ["4:3: state 'hello' has no way out: add 'next' or make it 'end: true'"]),
        (
            "unfilled_slot",
            [
                "5:11: state 'hello' reads slot 'role', which is not filled on every path to it "
                "(guard it with 'is defined' or fill it first)"
            ],
        ),
        (
            "too_many_buttons",
            [
                "8:7: state 'pick' offers 14 buttons with its extra button; "
                "LINE quick reply allows 13"
            ],
        ),
        (
            "long_label_line",
            [
                "9:29: choice 'long' in 'pick': label '経理・財務・会計・税務・監査・内部統制など' "
                "has 21 characters; LINE allows 20"
            ],
        ),
        (
            "long_label_slack",
            [
                "5:12: command 'agent': label 'Please let me talk to a human agent about my career, "
                "my pay and my boss right now' has 81 characters; LINE allows 20",
                "5:12: command 'agent': label is over Slack's 75 characters",
            ],
        ),
        ("duplicate_choice", ["10:16: state 'pick' has the choice id 'keiri' twice"]),
        ("duplicate_command", ["5:10: duplicate command id 'help'"]),
        ("empty_text", ["5:11: state 'hello' says an empty text"]),
        ("empty_label", ["9:30: choice 'keiri' in 'pick' has no label"]),
        ("bad_expression", ["11:13: bad expression: unexpected '=' in 'role ==='"]),
    ],
)
def test_each_rule_names_file_line_and_column(name: str, expected: list[str]) -> None:
    path = f"{BROKEN}/{name}.yaml"
    assert problems(path) == [f"{path}:{e}" for e in expected]


def test_the_mini_flow_is_clean() -> None:
    assert lint(load_flow("tests/flows/mini.yaml", check=False)) == []


# ---------------------------------------------------------------- finer points, inline

HEAD = "flow: f\nstart: q\n"
QUESTION = """\
  q:
    ask:
      text: どう？
      slot: mood
      choices:
        - {id: good, label: いい}
        - {id: bad, label: だめ}
"""
BYE = "  bye:\n    say: [またね]\n    end: true\n"


def test_a_router_state_of_branches_only_is_fine() -> None:
    text = (
        HEAD
        + "states:\n"
        + QUESTION
        + "    next: route\n"
        + "  route:\n    next:\n      - {if: \"mood == 'good'\", goto: bye}\n      - goto: bye\n"
        + BYE
    )
    assert lint_text(text) == []


def test_a_state_that_only_moves_on_does_nothing() -> None:
    text = HEAD.replace("start: q", "start: a") + "states:\n  a:\n    next: bye\n" + BYE
    assert lint_text(text) == [
        "f.yaml:4:3: state 'a' does nothing: give it a message or a question"
    ]


def test_the_last_branch_must_always_hold() -> None:
    text = (
        HEAD + "states:\n" + QUESTION + "    next:\n      - {if: \"mood == 'good'\", goto: bye}\n"
    )
    assert lint_text(text + BYE) == [
        "f.yaml:11:5: state 'q': the last branch needs no 'if', so some branch always holds"
    ]


def test_a_question_whose_every_choice_goes_somewhere_needs_no_next() -> None:
    text = (
        HEAD
        + "states:\n"
        + QUESTION.replace("いい}", "いい, goto: bye}").replace("だめ}", "だめ, goto: bye}")
    )
    assert lint_text(text + BYE) == []


def test_a_handoff_needs_a_resume_state() -> None:
    text = (
        HEAD.replace("start: q", "start: h")
        + "states:\n  h:\n    handoff: {reason: 相談}\n"
        + BYE.replace("  bye:", "  after:")
    )
    assert lint_text(text) == [
        "f.yaml:4:3: state 'h' has no way out: add 'next' or make it 'end: true'",
        "f.yaml:6:3: state 'after' is unreachable from 'h'",
    ]
    assert lint_text("resume: after\n" + text) == []


def test_a_command_going_nowhere_and_a_choice_id_shadowing_a_command() -> None:
    text = (
        HEAD
        + "commands:\n  - {id: good, label: 良い, goto: nowhere}\n"
        + "states:\n"
        + QUESTION
        + "    next: bye\n"
        + BYE
    )
    assert lint_text(text) == [
        "f.yaml:4:33: command 'good' goes to unknown state 'nowhere'",
        "f.yaml:11:16: choice id 'good' in 'q' is also a command id",
    ]


def test_only_one_fallback() -> None:
    text = HEAD + "states:\n" + QUESTION + "    next: bye\n    fallback: true\n"
    text += BYE + "    fallback: true\n"
    assert lint_text(text) == ["f.yaml:16:15: only one state can be the fallback"]


def test_a_bare_yes_in_a_boolean_field() -> None:
    text = HEAD + "states:\n" + QUESTION + "    next: bye\n" + BYE.replace("true", "yes")
    assert lint_text(text) == [
        "f.yaml:14:10: a bare yes/no/on/off is read by YAML as a boolean: write true or false"
    ]


def test_a_multi_select_done_label_is_a_button_too() -> None:
    long = "これで全部です、ありがとうございました！！"  # 21 characters
    ask = QUESTION + f"      multi: true\n      done_label: {long}\n"
    text = HEAD + "states:\n" + ask + "    next: bye\n" + BYE
    assert lint_text(text) == [
        f"f.yaml:12:19: done button of 'q': label '{long}' has 21 characters; LINE allows 20"
    ]


def test_reads_guarded_or_filled_on_every_path_are_fine() -> None:
    text = (
        HEAD
        + "vars: {agency: テスト社}\n"
        + "states:\n"
        + QUESTION
        + "    next: tell\n"
        + "  tell:\n"
        + "    say:\n"
        + '      - "{{ label.mood }}ですね、{{ vars.agency }}より"\n'
        + '      - {text: "{{ nick }}さん", if: nick is defined}\n'
        + "    next: bye\n"
        + BYE
    )
    assert lint_text(text) == []


def test_a_var_read_as_a_slot() -> None:
    text = (
        HEAD.replace("start: q", "start: a")
        + "vars: {agency: テスト社}\n"
        + 'states:\n  a:\n    say: ["{{ agency }}です"]\n    end: true\n'
    )
    assert lint_text(text) == ["f.yaml:6:11: 'agency' is a flow var: read it as vars.agency"]


def test_card_footer_field_label_and_handoff_reason_are_templates_too() -> None:
    text = (
        HEAD.replace("start: q", "start: a")
        + "resume: a\n"
        + "states:\n"
        + "  a:\n"
        + "    say:\n"
        + "      - card:\n"
        + "          title: まとめ\n"
        + '          fields: [{label: "{{ x ", value: v}]\n'
        + '          footer: "{{ y("\n'
        + '    handoff: {reason: "{{ z }"}\n'
    )
    assert lint_text(text) == [
        "f.yaml:9:20: bad template: unexpected end of template, expected "
        "'end of print statement'. in '{{ x '",
        "f.yaml:10:19: bad template: unexpected 'end of template' in '{{ y('",
        "f.yaml:11:23: bad template: unexpected '}' in '{{ z }'",
    ]


# ---------------------------------------------------------------- yarigai flows check


def test_check_a_broken_file_prints_the_location_and_fails() -> None:
    result = CliRunner().invoke(flows, ["check", f"{BROKEN}/unknown_target.yaml"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"{BROKEN}/unknown_target.yaml:6:11: state 'advice' goes to unknown state 'advise'\n"
    )
    assert result.stdout == f"{BROKEN}/unknown_target.yaml: 1 problem\n"


def test_check_a_good_file_passes() -> None:
    result = CliRunner().invoke(flows, ["check", "tests/flows/mini.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "tests/flows/mini.yaml: ok (8 states)\n"
    assert result.stderr == ""


def test_check_a_directory_reports_every_file() -> None:
    result = CliRunner().invoke(flows, ["check", BROKEN])
    assert result.exit_code == 1
    broken = sorted(p.name for p in (ROOT / BROKEN).glob("*.yaml"))
    summaries = result.stdout.splitlines()
    assert [line.split(":")[0] for line in summaries] == [f"{BROKEN}/{n}" for n in broken]
    assert all(line.endswith(("1 problem", "2 problems")) for line in summaries)
    assert f"{BROKEN}/duplicate_key.yaml:7:3: duplicate key 'hello'" in result.stderr


def test_check_reads_the_directory_from_flows_dir(tmp_path: Path) -> None:
    flow = "flow: f\nstart: a\nstates:\n  a:\n    say: [hi]\n    end: true\n"
    (tmp_path / "one.yaml").write_text(flow, encoding="utf-8")
    (tmp_path / "two.yaml").write_text(flow, encoding="utf-8")
    (tmp_path / "flow.schema.json").write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(flows, ["check"], env={"FLOWS_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'one.yaml'}: ok (1 state)",
        f"{tmp_path / 'two.yaml'}: 1 problem",
    ]
    assert result.stderr == (
        f"{tmp_path / 'two.yaml'}:1:7: flow id 'f' is also used by {tmp_path / 'one.yaml'}\n"
    )


def test_check_an_empty_directory_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(flows, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "no flow files" in result.stderr


# ---------------------------------------------------------------- pacing on a phone


def test_a_turn_of_more_than_three_bubbles_is_named() -> None:
    text = (
        HEAD
        + "states:\n"
        + QUESTION
        + "    next: advice\n"
        + "  advice:\n    say: [一つ目, 二つ目]\n    next: more\n"
        + "  more:\n    say: [三つ目]\n    next: bye\n"
        + BYE.replace("[またね]", "[またね, さようなら]")
    )
    assert lint_text(text) == [
        "f.yaml:12:3: state 'advice': an answer to 'q' can send 5 bubbles in one turn "
        "(advice -> more -> bye); at most 3 on a phone"
    ]


def test_a_command_s_own_words_count_in_its_turn() -> None:
    text = (
        HEAD
        + "commands:\n  - {id: stop, label: やめる, goto: bye, say: [わかりました, では]}\n"
        + "states:\n"
        + QUESTION
        + "    next: bye\n"
        + BYE.replace("[またね]", "[またね, さようなら]")
    )
    assert lint_text(text) == [
        "f.yaml:4:5: state 'bye': command 'stop' can send 4 bubbles in one turn (bye); "
        "at most 3 on a phone"
    ]


def test_a_long_bubble_is_named_with_its_longest_branch() -> None:
    long_text = "あ" * 120
    text = (
        HEAD
        + "vars: {name: Zキャリア}\n"
        + "states:\n"
        + QUESTION
        + "    next: bye\n"
        + "  bye:\n    say:\n"
        + f"      - \"{{% if mood == 'good' %}}{long_text}{{% else %}}短い{{% endif %}}"
        + f'{{{{ vars.name }}}}{"い" * 56}"\n'
        + "    end: true\n"
    )
    assert lint_text(text) == [
        "f.yaml:15:9: state 'bye': a bubble of up to 181 characters; at most 180 fit a phone "
        "(shorten it, split the turn, or use a card)"
    ]


def test_cards_are_exempt_from_the_length() -> None:
    value = "う" * 400
    text = (
        HEAD
        + "states:\n"
        + QUESTION
        + "    next: bye\n"
        + f"  bye:\n    say:\n      - card: {{title: まとめ, fields: [{{label: 長い, value: {value}}}]}}\n"
        + "    end: true\n"
    )
    assert lint_text(text) == []


def test_an_opposite_must_be_a_sibling_choice() -> None:
    text = (
        HEAD
        + "states:\n"
        + QUESTION.replace("{id: good, label: いい}", "{id: good, label: いい, opposite: awful}")
    )
    assert lint_text(text + "    next: bye\n" + BYE) == [
        "f.yaml:9:43: choice 'good' in 'q': opposite 'awful' is not a choice of this question"
    ]


def test_with_a_brief_every_question_has_a_short_label_and_the_brief_reads_known_slots() -> None:
    brief = (
        'brief:\n  line: ["{{ label.mood }}", "{{ mod }}"]\n'
        '  facts:\n    - {label: 気分, value: "{{ mood }}"}\n'
    )
    text = HEAD + brief + "states:\n" + QUESTION + "    next: bye\n" + BYE
    assert lint_text(text) == [
        "f.yaml:4:30: the brief reads 'mod', which no state fills",
        "f.yaml:9:5: question 'q' needs a short `label` for agents (brief)",
    ]
    labelled = text.replace("      text: どう？\n", "      text: どう？\n      label: 今日の気分\n")
    assert lint_text(labelled) == ["f.yaml:4:30: the brief reads 'mod', which no state fills"]
    long = labelled.replace("今日の気分", "今日のご気分はいかがでしょうか")
    assert "agents' labels are at most 12" in lint_text(long.replace("{{ mod }}", ""))[0]
