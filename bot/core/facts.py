"""What analytics records of a turn, worked out from the turn itself (pure: no I/O).

The facts follow the engine's decisions: a question counts as answered when the engine put it
in the answered history, not by reading the transcript later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bot.engine import HISTORY
from bot.flows.schema import FlowSpec
from bot.models import (
    ChoiceIn,
    Classified,
    ConversationEnded,
    ConversationState,
    Event,
    TextIn,
    Turn,
)
from bot.records import Fact, event_step

CONFIRMED = "confirmed"
"""The stage of a typed answer the user confirmed (「〜ということですね？」 → はい)."""


@dataclass(frozen=True, slots=True)
class TurnFacts:
    facts: tuple[Fact, ...]
    new_run: bool  # the turn began a run (the funnel's first step)


def turn_facts(
    spec: FlowSpec,
    previous: ConversationState | None,
    event: Event,
    turn: Turn,
    *,
    handoff: bool,
    asked_at: datetime | None,
    now: datetime,
) -> TurnFacts:
    """The facts of a turn (`previous`: the conversation before it; `asked_at`: when the
    question it answers was asked; `handoff`: the turn asks for an agent)."""
    facts: list[Fact] = [Fact(kind="entered", state=name) for name in turn.entered]
    starts = set(spec.insights.funnel[0].enter) if spec.insights else {spec.start}
    new_run = any(name in starts for name in turn.entered)
    answered = _answer(spec, previous, event, turn, asked_at=asked_at, now=now)
    facts += answered
    if spec.insights is not None:
        answered_states = {f.state for f in answered if f.kind == "answer"}
        for step in spec.insights.funnel:
            if any(name in step.enter for name in turn.entered) or (
                step.answer is not None and step.answer in answered_states
            ):
                facts.append(Fact(kind="step", value=step.id))
        if spec.insights.cross is not None:
            facts += _cross(spec, spec.insights.cross, answered, turn)
        for result in spec.insights.results:
            if result.state in turn.entered:
                value = turn.conversation.slots.get(result.slot)
                facts.append(Fact(kind="result", state=result.state, value=_text(value)))
    if handoff:
        facts.append(Fact(kind="handoff_requested", state=turn.conversation.state))
        facts.append(Fact(kind="step", value=event_step("handoff_requested")))
    if any(isinstance(e, ConversationEnded) for e in turn.effects):
        facts.append(Fact(kind="ended", state=turn.conversation.state))
    return TurnFacts(facts=tuple(facts), new_run=new_run)


def _answer(
    spec: FlowSpec,
    previous: ConversationState | None,
    event: Event,
    turn: Turn,
    *,
    asked_at: datetime | None,
    now: datetime,
) -> list[Fact]:
    """An answer, a multi-select pick or a typed message not understood, at the question the
    conversation was waiting on."""
    if not isinstance(event, TextIn | ChoiceIn):
        return []
    if previous is None:
        # A first message that answers at once: the greeting's question is what it answers.
        first = next((n for n in turn.entered if spec.states[n].ask is not None), None)
        if first is None:
            return []
        previous = turn.conversation.model_copy(
            update={
                "state": first,
                "slots": {},
                "selection": (),
                "misses": 0,
                "pending_confirm": (),
            }
        )
    question = spec.states.get(previous.state)
    if question is None or question.ask is None:
        return []
    ask = question.ask
    how: Literal["tapped", "typed"] = "typed" if isinstance(event, TextIn) else "tapped"
    classified = next(
        (e for e in turn.effects if isinstance(e, Classified) and e.state == previous.state), None
    )
    stage = classified.stage if classified and how == "typed" else None
    if previous.pending_confirm and not turn.conversation.pending_confirm:
        how, stage = "typed", CONFIRMED  # a guess from typed text, confirmed
    after = turn.conversation
    before_history = previous.slots.get(HISTORY) or []
    after_history = after.slots.get(HISTORY) or []
    if after_history != before_history and after_history[-1:] == [previous.state]:
        seconds = (now - asked_at).total_seconds() if asked_at is not None else None
        return [
            Fact(
                kind="answer",
                state=previous.state,
                value=_text(after.slots.get(ask.slot)),
                how=how,
                stage=stage,
                seconds=seconds,
            )
        ]
    if ask.multi and after.state == previous.state and after.selection != previous.selection:
        added = [c for c in after.selection if c not in previous.selection]
        if added:
            return [
                Fact(kind="pick", state=previous.state, value=",".join(added), how=how, stage=stage)
            ]
    if after.state == previous.state and after.misses > previous.misses and how == "typed":
        return [Fact(kind="not_understood", state=previous.state, how=how, stage=stage)]
    return []


def _cross(spec: FlowSpec, cross: tuple[str, str], answered: list[Fact], turn: Turn) -> list[Fact]:
    """The rows question's answer beside the columns question's, as the latter is given."""
    rows, columns = cross
    given = next((f for f in answered if f.kind == "answer" and f.state == columns), None)
    ask = spec.states[rows].ask if rows in spec.states else None
    if given is None or ask is None:
        return []
    row = turn.conversation.slots.get(ask.slot)
    if row is None:
        return []
    return [Fact(kind="cross", state=rows, value=f"{_text(row)}|{given.value or ''}"[:255])]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)[:255]
    return str(value)[:255]
