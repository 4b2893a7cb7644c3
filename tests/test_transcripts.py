"""Conversation transcripts (tests/transcripts/*.yaml) run against the real flows.

Each step is what the user does (`start`, `tap: <label>`, `say: <text>`, `resume`) and what must
follow (`followup: <id>`: that follow-up's timer fired): `bot` texts the bot's messages contain (in order), `not_bot` texts they must not contain,
`buttons` labels offered, `slots` values, `state` the question waited on, `effects` kinds.
`facts` is what the service would pass a booking step (free slots, contact, open booking).
Together the transcripts must enter every state of every flow in `flows/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.engine import MAX_BUBBLES, MAX_CHARS, Engine
from bot.flows.loader import Flow, load_flows
from bot.models import (
    CardOut,
    ChoiceIn,
    ChoicesOut,
    ConversationState,
    Facts,
    FollowUpIn,
    ResumeIn,
    StartIn,
    TextIn,
    Turn,
    outbound_text,
)

ROOT = Path(__file__).parent
FLOWS = load_flows(ROOT.parent / "flows")
TRANSCRIPTS = sorted((ROOT / "transcripts").glob("*.yaml"))
_visited: dict[str, set[str]] = {flow_id: set() for flow_id in FLOWS}


def _event(step: dict[str, Any], last: ChoicesOut | None) -> Any:
    if step.get("start"):
        return StartIn(returning=step.get("returning", False))
    if "resume" in step:
        return ResumeIn()
    if "followup" in step:  # a follow-up's timer fired
        return FollowUpIn(followup=str(step["followup"]))
    if "say" in step:
        return TextIn(text=str(step["say"]))
    label = str(step["tap"])
    assert last is not None, f"tap {label!r}: no buttons are showing"
    choice = next((c for c in last.choices if c.label == label), None)
    labels = [c.label for c in last.choices]
    assert choice is not None, f"tap {label!r}: the buttons are {labels}"
    return ChoiceIn(choice=choice.id, state=last.state, label=label)


def _check(step: dict[str, Any], turn: Turn, where: str) -> None:
    texts = [outbound_text(m) for m in turn.messages]
    said = "\n".join(texts)
    position = 0
    for expected in step.get("bot", []):
        found = said.find(str(expected), position)
        assert found >= 0, f"{where}: expected {expected!r} (in order) in:\n{said}"
        position = found + len(str(expected))
    for unwanted in step.get("not_bot", []):
        assert str(unwanted) not in said, f"{where}: {unwanted!r} must not be said:\n{said}"
    if "buttons" in step:
        question = next((m for m in reversed(turn.messages) if isinstance(m, ChoicesOut)), None)
        labels = [c.label for c in question.choices] if question else []
        for label in step["buttons"]:
            assert label in labels, f"{where}: button {label!r} not in {labels}"
    for slot, value in step.get("slots", {}).items():
        actual = turn.conversation.slots.get(slot)
        assert actual == value, f"{where}: slot {slot} is {actual!r}, expected {value!r}"
    if "state" in step:
        assert turn.conversation.state == step["state"], f"{where}: at {turn.conversation.state}"
    if "effects" in step:
        kinds = sorted(e.kind for e in turn.effects if e.kind != "classified")
        assert kinds == sorted(step["effects"]), f"{where}: effects {kinds}"
    # Phone pacing: at most 3 bubbles a turn, a text bubble at most 180 characters.
    assert len(turn.messages) <= MAX_BUBBLES, f"{where}: {len(turn.messages)} bubbles:\n{said}"
    for message in turn.messages:
        assert "{{" not in outbound_text(message), f"{where}: unrendered template"
        if isinstance(message, CardOut):
            assert message.fields, f"{where}: empty card"
        else:
            text = outbound_text(message)
            assert len(text) <= MAX_CHARS, f"{where}: a bubble of {len(text)} characters:\n{text}"


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path) -> None:
    script = yaml.safe_load(path.read_text(encoding="utf-8"))
    flow: Flow = FLOWS[script.get("flow", "career")]
    engine = Engine(flow)
    conversation: ConversationState | None = None
    last: ChoicesOut | None = None
    for number, step in enumerate(script["steps"], 1):
        where = f"{path.name} step {number} ({ {k: v for k, v in step.items() if k in ('tap', 'say', 'start')} })"
        if "state_override" in step:  # simulate a flow change under the conversation
            assert conversation is not None
            conversation = conversation.model_copy(update={"state": step["state_override"]})
            continue
        facts = Facts.model_validate(step["facts"]) if "facts" in step else None
        turn = engine.advance(conversation, _event(step, last), facts)
        _visited[flow.id].update(turn.entered)
        _check(step, turn, where)
        conversation = turn.conversation
        last = next((m for m in reversed(turn.messages) if isinstance(m, ChoicesOut)), last)


def test_transcripts_visit_every_state() -> None:
    """Runs after the transcripts (file order); fails naming the states no transcript entered."""
    for path in TRANSCRIPTS:
        test_transcript(path)  # cheap, and makes this test independent of ordering and -k
    for flow_id, flow in FLOWS.items():
        never = sorted(set(flow.spec.states) - _visited[flow_id])
        assert not never, f"states of {flow_id} no transcript visits: {', '.join(never)}"
