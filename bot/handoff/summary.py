"""What an agent reads first: the user's answers (with the flow's labels), the bot's last
summary card and the end of the transcript. Pure: flow + state + transcript in, JSON out.

The shape is flow-agnostic: any flow's questions become `answers`, so a new flow needs no code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from bot.flows.expressions import render
from bot.flows.schema import FlowSpec
from bot.models import ConversationState, StoredMessage
from bot.nlu.normalize import normalize

RECENT: Final = 12  # transcript lines kept in the summary (the whole transcript is a link away)
_CLIP: Final = 200


def summarize(
    spec: FlowSpec,
    state: ConversationState,
    transcript: Sequence[StoredMessage],
    *,
    reason: str,
) -> dict[str, Any]:
    """The summary stored with a handoff.

    `brief`: the parts of the one line an agent reads first (the flow's `brief.line`).
    `answers`: each question the user answered, in flow order: its short `label` for agents
    (the flow's), the question's text, and the answer as the flow labels it.
    `facts`: what the flow worked out, as `{label, value}` in the flow's words (`brief.facts`);
    slots the flow does not name there are never shown, so agents never read slot keys.
    `asked`: the last words the user typed before the request, if any.
    `outcome`: the last card the bot showed (e.g. the まとめ: fit result, advice), if any.
    `recent`: the last lines of the conversation.
    """
    labels = _labels(spec)
    context = {**state.slots, "vars": spec.vars, "label": _labelled(state.slots, labels)}
    answers = []
    asked = set()
    for name, spec_state in spec.states.items():
        ask = spec_state.ask
        if ask is None or ask.slot in asked or ask.slot not in state.slots:
            continue
        asked.add(ask.slot)
        question = _question(render(ask.text, context))
        answers.append(
            {
                "slot": ask.slot,
                "state": name,
                "label": ask.label or question,
                "question": question,
                "answer": _answer(state.slots[ask.slot], labels.get(ask.slot, {})),
            }
        )
    brief, facts = _brief(spec, context)
    return {
        "flow": state.flow,
        "state": state.state,
        "reason": reason,
        "brief": brief,
        "answers": answers,
        "facts": facts,
        "asked": _asked(transcript, spec),
        "outcome": _last_card(transcript),
        "recent": [
            {"sender": m.sender, "text": _clip(m.text)} for m in transcript if m.sender != "note"
        ][-RECENT:],
    }


def _brief(spec: FlowSpec, context: dict[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    if spec.brief is None:
        return [], []
    line = [
        part for part in (_clip(render(p, context).strip(), 60) for p in spec.brief.line) if part
    ]
    facts = [
        {"label": fact.label, "value": value}
        for fact in spec.brief.facts
        if (value := _clip(render(fact.value, context).strip()))
    ]
    return line, facts


def _asked(transcript: Sequence[StoredMessage], spec: FlowSpec) -> str:
    """The user's last typed words of their own: a request for a person (「担当者と話したい」)
    says nothing the reason does not and is passed over; an answer typed as its button reads
    is an answer, not a question, and so is a tap."""
    requests, answers = _request_words(spec), _answer_words(spec)
    for line in reversed(transcript):
        if line.sender != "user":
            continue
        said = normalize(line.text)
        if line.body.get("kind") == "text" and said in requests:
            continue
        if line.body.get("kind") != "text" or said in answers:
            return ""
        return _clip(line.text, 120)
    return ""


def _answer_words(spec: FlowSpec) -> set[str]:
    """What a message is when it is only an answer or a command, word for word."""
    words = [spec.texts.confirm_yes, spec.texts.confirm_no]
    words += [w for c in spec.commands for w in (c.label, *c.keywords, *c.examples)]
    for state in spec.states.values():
        if state.ask is None:
            continue
        if state.ask.multi:
            words.append(state.ask.done_label)
        words += [w for c in state.ask.choices for w in (c.label, *c.keywords, *c.examples)]
    return {normalize(w) for w in words}


def _request_words(spec: FlowSpec) -> set[str]:
    """How people ask for a person in this flow: the words of commands and choices that go to
    a handoff state."""
    handoffs = {name for name, state in spec.states.items() if state.handoff is not None}
    words = [
        w for c in spec.commands if c.goto in handoffs for w in (c.label, *c.keywords, *c.examples)
    ]
    words += [
        w
        for state in spec.states.values()
        if state.ask
        for choice in state.ask.choices
        if choice.goto in handoffs
        for w in (choice.label, *choice.keywords, *choice.examples)
    ]
    return {normalize(w) for w in words}


def _labels(spec: FlowSpec) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for state in spec.states.values():
        if state.ask:
            labels.setdefault(state.ask.slot, {}).update({c.id: c.label for c in state.ask.choices})
    return labels


def _labelled(slots: dict[str, Any], labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`label.role` for templates, as the engine provides it."""
    return {
        slot: [labels[slot].get(str(v), v) for v in value]
        if isinstance(value, list)
        else labels[slot].get(str(value), value)
        for slot, value in slots.items()
        if slot in labels
    }


def _answer(value: Any, labels: dict[str, str]) -> str:
    if isinstance(value, list):
        return "、".join(labels.get(str(v), str(v)) for v in value) or "（なし）"
    return labels.get(str(value), str(value))


def _question(text: str) -> str:
    """A long question keeps the sentence that asks; agents scan these."""
    if len(text) <= 60:
        return text
    for sentence in reversed(text.replace("？", "？\n").replace("。", "。\n").splitlines()):
        if "？" in sentence or "?" in sentence:
            return _clip(sentence.strip(), 60)
    return _clip(text, 60)


def _last_card(transcript: Sequence[StoredMessage]) -> dict[str, Any] | None:
    for line in reversed(transcript):
        if line.sender == "bot" and line.body.get("type") == "card":
            return {
                "title": line.body.get("title", ""),
                "fields": [
                    {"label": f.get("label", ""), "value": f.get("value", "")}
                    for f in line.body.get("fields", [])
                ],
            }
    return None


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
