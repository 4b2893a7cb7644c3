"""Free-text understanding: normalisation, keyword rules, the classifier's decisions, fallback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.errors import FlowError
from bot.flows.lint import lint
from bot.flows.loader import Flow, load_flows, parse_flow
from bot.flows.schema import ChoiceSpec, CommandSpec, QuestionSpec
from bot.nlu import encoders
from bot.nlu.classifier import (
    NluUnderstander,
    _drastic_commands,
    build_understander,
    split_clauses,
)
from bot.nlu.encoders import EmbeddingClassifier, EncoderUnavailable, Vectors
from bot.nlu.eval import Case, evaluate, load_cases
from bot.nlu.intents import Intent, Thresholds, intent_key
from bot.nlu.normalize import normalize, tidy
from bot.nlu.offtopic import FINISHED, OFF_TOPIC
from bot.nlu.rules import named_choices
from bot.nlu.understanding import (
    NO,
    YES,
    Understanding,
    keyword_understander,
    match_command,
    yes_or_no,
)

ROOT = Path(__file__).resolve().parents[1]
CAREER = load_flows(ROOT / "flows")["career"]
COMMANDS = CAREER.spec.commands


def ask(state: str) -> QuestionSpec:
    question = CAREER.spec.states[state].ask
    assert question is not None
    return question


FIT = ask("fit_start").choices


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("typed", "same_as"),
    [
        ("ＭＯＳ１級", "mos1級"),  # full width to half width, lower case
        ("ｹｲﾘ", "けいり"),  # half-width katakana
        ("ケイリ", "けいり"),  # katakana to hiragana
        ("ルーティーン", "るていん"),  # long vowels and small kana folded
        ("チャウ", "ちやう"),
        ("つまんないいいい！！！", "つまんない"),  # repeats and punctuation collapsed
        ("毎日 おなじ、こと。", "毎日おなじこと"),
    ],
)
def test_normalize_folds_what_people_type(typed: str, same_as: str) -> None:
    assert normalize(typed) == same_as


def test_tidy_keeps_the_script_a_model_knows() -> None:
    assert tidy("  エクセル　ＯＫ！！！  ") == "エクセル OK!"
    assert tidy("すごいいいいい〜〜〜") == "すごいい〜"


# ---------------------------------------------------------------- keyword rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("好きじゃない", ("no",)),  # 「好き」 is a yes keyword: the refusal wins
        ("はいじゃない", ("no",)),
        ("違うかな、好きだけど", ("no",)),
        ("そうでもない", ("no",)),  # 「そう」 lies inside the longer 「そうでもない」
        ("ちゃうちゃう", ("no",)),
        ("うん、そう", ("yes",)),
        ("めっちゃ好き", ("yes",)),
    ],
)
def test_refusals_are_checked_before_agreement(text: str, expected: tuple[str, ...]) -> None:
    assert named_choices(text, FIT) == expected


@pytest.mark.parametrize(
    ("state", "text", "expected"),
    [
        ("ask_role", "経理事務をしています", ("keiri",)),  # not 一般事務's 「事務」
        ("ask_role", "経理と人事を兼務してます", ("keiri", "jinji")),
        ("ask_direction", "転職は考えてない", ("stay",)),  # not change's 「転職」
        ("ask_direction", "仕事やめたい", ("change",)),
    ],
)
def test_a_keyword_inside_a_longer_one_does_not_count(
    state: str, text: str, expected: tuple[str, ...]
) -> None:
    assert named_choices(text, ask(state).choices) == expected


@pytest.mark.parametrize("text", ["やめる", "やめます", "ストップ"])
def test_stop_when_said_in_so_many_words(text: str) -> None:
    assert match_command(text, COMMANDS) == "stop"


@pytest.mark.parametrize(
    "text", ["仕事やめたい", "もう仕事やめたいんだよね", "会社をやめるか迷ってる"]
)
def test_quitting_the_job_is_not_stopping_the_chat(text: str) -> None:
    assert match_command(text, COMMANDS) is None
    understand = build_understander([CAREER])
    for name, state in CAREER.spec.states.items():
        if state.ask:
            got = understand(text, choices=state.ask.choices, commands=COMMANDS, multi=False)
            assert got.command != "stop", f"{text!r} stopped the chat at {name}"


@pytest.mark.parametrize("text", ["担当者と話したい", "人と話したい", "人間と話したいです"])
def test_asking_for_a_person_is_the_agent_command(text: str) -> None:
    understand = build_understander([CAREER])
    for name, state in CAREER.spec.states.items():
        if state.ask:
            got = understand(text, choices=state.ask.choices, commands=COMMANDS, multi=False)
            # The summary's own 「担当者と話したい」 choice leads to the same handoff.
            assert got.command == "agent" or (got.intents == ("talk",)), name


def test_yes_or_no_reads_refusals_first() -> None:
    assert yes_or_no("はい") == YES
    assert yes_or_no("いいえ") == NO
    assert yes_or_no("そうじゃない") == NO
    assert yes_or_no("違います") == NO
    assert yes_or_no("そうでもない") == NO
    assert yes_or_no("どうかな") is None


def test_keyword_understander_asks_back_when_named_twice() -> None:
    question = ask("ask_role")
    got = keyword_understander(
        "経理と人事を兼務してます", choices=question.choices, commands=COMMANDS, multi=False
    )
    assert got == Understanding()


# ---------------------------------------------------------------- the classifier's decisions


class FixedScores:
    """A classifier whose similarities are given per message and intent id."""

    def __init__(
        self, table: Mapping[str, Mapping[str, float]], thresholds: Thresholds, keys: set[str]
    ) -> None:
        self.name = "fixed"
        self.thresholds = thresholds
        self.table = table
        self.ids = {key: key.split(":")[1] if ":" in key else key for key in keys}

    def knows(self, key: str) -> bool:
        return key in self.ids

    def scores(self, texts: Sequence[str], keys: Sequence[str]) -> list[dict[str, float]]:
        return [{k: self.table.get(t, {}).get(self.ids[k], 0.0) for k in keys} for t in texts]


def choice(id_: str, *, goto: str | None = None, reset: bool = False) -> ChoiceSpec:
    return ChoiceSpec(id=id_, label=f"label-{id_}", goto=goto, reset=reset)


A, B = choice("a"), choice("b")
AGAIN = choice("again", goto="start", reset=True)
RESTART = CommandSpec(id="restart", label="最初から", goto="start", reset=True)
AGENT = CommandSpec(id="agent", label="担当者", goto="handoff")
BAR = Thresholds(accept=0.5, margin=0.05, command_extra=0.2)


def fixed(table: Mapping[str, Mapping[str, float]]) -> NluUnderstander:
    keys = {intent_key(s) for s in (A, B, AGAIN, RESTART, AGENT)} | {OFF_TOPIC.key, FINISHED.key}
    renamed = {
        text: {
            ("offtopic" if k == "_off" else "finished" if k == "_fin" else k): v
            for k, v in row.items()
        }
        for text, row in table.items()
    }
    classifier = FixedScores(renamed, BAR, keys)
    return NluUnderstander(classifier, drastic=[intent_key(RESTART)])


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"a": 0.8, "b": 0.3}, ("a",)),
        ({"a": 0.45, "b": 0.1}, ()),  # below the threshold
        ({"a": 0.8, "b": 0.77}, ()),  # no margin over the runner-up
        ({"a": 0.8, "_off": 0.9}, ()),  # small talk is nearer
        ({"a": 0.8, "_off": 0.78}, ()),  # ...or too near
    ],
)
def test_threshold_and_margin(scores: dict[str, float], expected: tuple[str, ...]) -> None:
    got = fixed({"msg": scores})("msg", choices=(A, B), commands=(), multi=False)
    assert got.intents == expected
    assert got.stage == ("classifier" if expected else "none")
    assert not got.confirm


def test_a_rival_that_means_the_same_is_no_rival() -> None:
    # The summary's 「最初からやり直す」 and the `restart` command both start over: no ambiguity,
    # and the choice wins because it also fills the slot.
    understand = fixed({"msg": {"again": 0.8, "restart": 0.79, "a": 0.2}})
    got = understand("msg", choices=(A, AGAIN), commands=(RESTART,), multi=False)
    assert got.intents == ("again",)


def test_a_drastic_command_needs_more_than_a_harmless_one() -> None:
    understand = fixed({"x": {"restart": 0.65}, "y": {"restart": 0.75}, "z": {"agent": 0.6}})
    assert understand("x", choices=(A,), commands=(RESTART,), multi=False).command is None
    assert understand("y", choices=(A,), commands=(RESTART,), multi=False).command == "restart"
    assert understand("z", choices=(A,), commands=(AGENT,), multi=False).command == "agent"


def test_drastic_commands_are_those_that_end_or_forget() -> None:
    drastic = set(_drastic_commands([CAREER]))
    by_id = {c.id: intent_key(c) for c in COMMANDS}
    assert drastic == {by_id["stop"], by_id["restart"]}


def test_several_frustrations_in_one_message_are_all_recorded() -> None:
    question = ask("ask_frustrations")
    understand = build_understander([CAREER])
    got = understand(
        "評価もされないし成長もしない", choices=question.choices, commands=COMMANDS, multi=True
    )
    assert got.intents == ("recognition", "growth")
    assert got.stage == "keyword" and not got.confirm


def test_a_frustration_only_the_classifier_found_is_confirmed() -> None:
    understand = fixed({"評価されないし": {}, "ぜんぜんむり": {"b": 0.9}})
    got = understand("評価されないし、ぜんぜんむり", choices=(A, B), commands=(), multi=True)
    assert got.intents == ("b",)
    assert got.confirm and got.stage == "classifier"


def test_keyword_and_classifier_frustrations_together_are_confirmed_together() -> None:
    a = ChoiceSpec(id="a", label="評価", keywords=("評価",))
    understand = fixed({"ぜんぜんむり": {"b": 0.9}})
    got = understand("評価されないし、ぜんぜんむり", choices=(a, B), commands=(), multi=True)
    assert got.intents == ("a", "b")
    assert got.confirm


def test_saying_that_is_all_in_a_multi_select_is_no_answer() -> None:
    understand = fixed({"これだけかな": {"_fin": 0.9, "restart": 0.85}})
    got = understand("これだけかな", choices=(A, B), commands=(RESTART,), multi=True)
    assert got.intents == () and got.command is None


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("評価もされないし成長もしない", ["評価もされない", "成長もしない"]),
        ("毎日同じで、しかも誰にも感謝されない", ["毎日同じで", "誰にも感謝されない"]),
        ("単調だし将来も不安", ["単調だ", "将来も不安"]),
        ("おいしいし楽しい", ["おいしい", "楽しい"]),
        ("はいしゃに行きたい", ["はいしゃに行きたい"]),  # 「いし」 before 「ゃ」 is no break
        ("つまらない", ["つまらない"]),
    ],
)
def test_split_clauses(text: str, clauses: list[str]) -> None:
    assert split_clauses(text) == clauses


# ---------------------------------------------------------------- model loading and fallback


def test_falls_back_to_ngrams_when_the_model_cannot_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable(model: str) -> encoders.Encoder:
        raise EncoderUnavailable(model, "package 'x' is not installed")

    monkeypatch.setattr(encoders, "load_encoder", unavailable)
    with caplog.at_level(logging.WARNING, logger="bot.nlu"):
        understand = build_understander([CAREER])
    assert understand.classifier.name == "ngram"
    assert "using character n-grams" in caplog.text
    question = ask("ask_frustrations")
    got = understand(
        "毎日同じ作業ばかりで退屈", choices=question.choices, commands=COMMANDS, multi=True
    )
    assert got.intents == ("repetitive",)


def test_falls_back_when_numpy_itself_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bot.nlu.encoders", None)  # import raises ImportError
    assert build_understander([CAREER]).classifier.name == "ngram"


def test_a_missing_package_is_reported_as_unavailable() -> None:
    with pytest.raises(EncoderUnavailable, match="'no-such-package' is not installed"):
        encoders._import("x", "no_such_module_here", "no-such-package")
    with pytest.raises(EncoderUnavailable, match="unknown model"):
        encoders.load_encoder("gpt")


def test_the_chosen_model_loads_offline() -> None:
    understand = build_understander([CAREER])
    assert understand.classifier.name.startswith("use-")


class CountingEncoder:
    name = "counting-1"

    def __init__(self) -> None:
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        rng = np.random.default_rng(len(texts))
        rows = rng.normal(size=(len(texts), 8)).astype(np.float32)
        unit: Vectors = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return unit


def test_example_embeddings_are_cached_by_model_and_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intents = [Intent(key="k", id="a", texts=("経理です", "会計の仕事"))]
    encoder = CountingEncoder()
    EmbeddingClassifier(encoder, intents, thresholds=BAR, cache_dir=tmp_path)
    assert encoder.texts == 2
    monkeypatch.setattr(encoders, "_in_memory", {})  # as a new process would start
    EmbeddingClassifier(encoder, intents, thresholds=BAR, cache_dir=tmp_path)
    assert encoder.texts == 2  # read back from the file, not embedded again
    for path in tmp_path.iterdir():
        path.write_bytes(b"damaged")
    monkeypatch.setattr(encoders, "_in_memory", {})
    EmbeddingClassifier(encoder, intents, thresholds=BAR, cache_dir=tmp_path)
    assert encoder.texts == 4  # a damaged cache is recomputed
    other = [Intent(key="k", id="a", texts=("経理です", "人事です"))]
    EmbeddingClassifier(encoder, other, thresholds=BAR, cache_dir=tmp_path)
    assert encoder.texts == 6  # other examples, another cache entry


def test_an_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    intents = [Intent(key="k", id="a", texts=("まったく別の文",))]
    classifier = EmbeddingClassifier(
        CountingEncoder(), intents, thresholds=BAR, cache_dir=blocked / "cache"
    )
    assert classifier.knows("k")


def test_classification_logs_never_contain_the_message(caplog: pytest.LogCaptureFixture) -> None:
    understand = build_understander([CAREER])
    secret = "山田花子です、給料が安すぎて毎日つらい"
    with caplog.at_level(logging.DEBUG, logger="bot.nlu"):
        for state in CAREER.spec.states.values():
            if state.ask:
                understand(
                    secret, choices=state.ask.choices, commands=COMMANDS, multi=state.ask.multi
                )
    assert caplog.records
    assert all(
        secret not in r.getMessage() and "山田" not in r.getMessage() for r in caplog.records
    )


# ---------------------------------------------------------------- evaluation and lint


def test_evaluate_verdicts() -> None:
    understand = fixed({"a": {"a": 0.9}, "bee": {"b": 0.51, "a": 0.5}, "chat": {"_off": 0.9}})
    flow = parse_flow(
        """
flow: t
start: q
states:
  q:
    ask:
      text: どれ？
      slot: x
      choices:
        - {id: a, label: label-a}
        - {id: b, label: label-b}
    next: done
  done:
    end: true
""",
        path="t.yaml",
    )
    cases = [Case("q", "a", ("a",)), Case("q", "bee", ("b",)), Case("q", "chat", ())]
    report = evaluate(understand, flow, cases)
    assert [r.verdict for r in report.results] == ["correct", "rejected", "correct"]
    assert report.accuracy == pytest.approx(2 / 3)
    assert report.wrong_confident_rate == 0.0
    assert "q" in report.confusion()


def test_labelled_file_refuses_a_bare_yes(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("flow: career\nstates:\n  fit_start:\n    yes: [はい]\n", encoding="utf-8")
    with pytest.raises(FlowError, match="quote it"):
        load_cases(path)


def test_lint_wants_examples_for_every_choice_once_a_question_has_some() -> None:
    flow: Flow = parse_flow(
        """
flow: t
start: q
states:
  q:
    ask:
      text: どれ？
      slot: x
      choices:
        - id: a
          label: A
          examples: [あ, いい, ううう, ええ, おお]
        - id: b
          label: B
          examples: [びー]
    next: done
  done:
    end: true
""",
        path="t.yaml",
    )
    problems = [str(p) for p in lint(flow)]
    assert problems == [
        "t.yaml:13:15: choice 'b' in 'q' has 1 examples; give it at least 5 (its neighbours "
        "have examples, so the classifier would rarely pick it)"
    ]
