"""The gate on the blind set (tests/nlu/blind.yaml, issue 13): at least 92 % correct and at most
3 % confidently wrong, with the shipped model.

The blind set was written by someone who never saw the flow's examples or the dev set, from the
question texts alone; nobody tunes on it. Only the summary is reported here, never the messages,
so a failure cannot turn into tuning on it: fix classes of failure with tests/nlu/dev.yaml.
"""

from __future__ import annotations

from pathlib import Path

from bot.flows.loader import load_flows
from bot.nlu.classifier import build_understander
from bot.nlu.eval import evaluate, load_cases

ROOT = Path(__file__).resolve().parents[1]
BLIND = ROOT / "tests" / "nlu" / "blind.yaml"
MIN_ACCURACY = 0.92
MAX_WRONG_CONFIDENT = 0.03


def test_blind_set_meets_the_gate() -> None:
    flows = load_flows(ROOT / "flows")
    flow_id, cases = load_cases(BLIND)
    understand = build_understander(flows.values(), model="use")
    assert understand.classifier.name.split("-")[0] == "use"
    result = evaluate(understand, flows[flow_id], cases)
    summary = "\n".join(result.summary().splitlines()[:3])  # the figures, not the messages
    assert result.accuracy >= MIN_ACCURACY, summary
    assert result.wrong_confident_rate <= MAX_WRONG_CONFIDENT, summary
