"""Gates on the labelled development set (tests/nlu/dev.yaml): understood, or asked back.

At least 90 % correct (a rejected off-topic message counts as correct) and at most 5 %
confidently wrong, for the shipped model and for the pure-Python fallback alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.flows.loader import load_flows
from bot.nlu.classifier import build_understander
from bot.nlu.eval import Report, evaluate, load_cases

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "tests" / "nlu" / "dev.yaml"
HOLDOUT = ROOT / "tests" / "nlu" / "holdout.yaml"
MIN_ACCURACY = 0.90
MAX_WRONG_CONFIDENT = 0.05
MIN_PER_INTENT = 15


def report(path: Path, model: str) -> Report:
    flows = load_flows(ROOT / "flows")
    flow_id, cases = load_cases(path)
    understand = build_understander(flows.values(), model=model)
    # The fallback must be measured as itself, and the model must not silently fall back.
    assert understand.classifier.name.split("-")[0] == model
    return evaluate(understand, flows[flow_id], cases)


@pytest.mark.parametrize("model", ["use", "ngram"])
def test_dev_set_gates(model: str) -> None:
    result = report(DEV, model)
    detail = f"{model}:\n{result.summary()}\n{result.mistakes()}"
    assert result.accuracy >= MIN_ACCURACY, detail
    assert result.wrong_confident_rate <= MAX_WRONG_CONFIDENT, detail


def test_held_out_set_stays_within_the_gates() -> None:
    result = report(HOLDOUT, "use")
    assert result.accuracy >= MIN_ACCURACY, result.mistakes()
    assert result.wrong_confident_rate <= MAX_WRONG_CONFIDENT, result.mistakes()


def test_dev_set_covers_every_question_and_command() -> None:
    """At least 15 messages per answer of every question, per command, and off-topic ones."""
    flow = load_flows(ROOT / "flows")["career"]
    _, cases = load_cases(DEV)
    counts: dict[tuple[str, str], int] = {}
    per_command: dict[str, int] = {}
    for case in cases:
        for intent in case.expected or ("_reject",):
            counts[(case.state, intent)] = counts.get((case.state, intent), 0) + 1
            per_command[intent] = per_command.get(intent, 0) + 1
    asked = {tuple(c.id for c in s.ask.choices) for s in flow.spec.states.values() if s.ask}
    for name, state in flow.spec.states.items():
        if state.ask is None:
            continue
        ids = tuple(c.id for c in state.ask.choices)
        labelled = [s for s, _ in counts if s == name]
        if not labelled:
            # The eight fit questions share their choices: one of them stands for all.
            assert ids in asked and any(
                all(counts.get((other, i), 0) >= MIN_PER_INTENT for i in ids)
                for other in {s for s, _ in counts}
            ), name
            continue
        # Questions that share their choices (the fit questions) share the quota too: one of
        # them holds 15 per answer, the others hold messages about their own statement.
        siblings = [
            other
            for other, spec in flow.spec.states.items()
            if spec.ask and tuple(c.id for c in spec.ask.choices) == ids
        ]
        for choice in ids:
            best = max(counts.get((other, choice), 0) for other in siblings)
            assert best >= MIN_PER_INTENT, (name, choice)
    for command in flow.spec.commands:
        assert per_command.get(command.id, 0) >= MIN_PER_INTENT, command.id
    assert per_command["_reject"] >= MIN_PER_INTENT
