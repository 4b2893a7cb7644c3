"""Draw a flow as a Mermaid flowchart, for reviewing a flow's shape at a glance."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from bot.flows.loader import Flow
from bot.flows.schema import FlowSpec, StateSpec, StepKind, step_kind

CONDITION_CHARS = 30  # longer branch conditions are cut so edges stay readable

_START = "flow_start"
_ANY = "any_state"
_SHAPES: dict[StepKind, tuple[str, str]] = {
    "ask": ("{", "}"),  # a decision: the user picks the way on
    "handoff": ("{{", "}}"),
    "book": ("[[", "]]"),
    "end": ("([", "])"),
    "pass": ("[", "]"),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "{": "#123;", "}": "#125;"}


def mermaid(flow: Flow) -> str:
    """A `flowchart TD` of the flow's states: shapes by kind, edges labelled by how they are taken."""
    spec = flow.spec
    ids = _node_ids(spec)
    lines = ["flowchart TD", f'    {_START}(("start"))']
    for name, state in spec.states.items():
        opening, closing = _SHAPES[step_kind(state)]
        lines.append(f'    {ids[name]}{opening}"{_escape(name)}"{closing}')
    if any(c.goto for c in spec.commands) or any(s.fallback for s in spec.states.values()):
        lines.append(f'    {_ANY}[/"any state"/]')
    lines.append(_edge(_START, ids[spec.start], "-->", ""))
    if spec.returning:
        lines.append(_edge(_START, ids[spec.returning], "-.->", "returning"))
    for name, state in spec.states.items():
        if state.handoff:  # left only when an agent hands back: to `resume`, else to `next`
            back = [(spec.resume, "")] if spec.resume else list(_state_edges(state))
            for target, label in _merged(back):
                text = f"handed back: {label}" if label else "handed back"
                lines.append(_edge(ids[name], ids[target], "-.->", text))
        else:
            for target, label in _merged(_state_edges(state)):
                lines.append(_edge(ids[name], ids[target], "-->", label))
        if state.fallback:
            lines.append(_edge(_ANY, ids[name], "-.->", "flow changed"))
    for command in spec.commands:
        if command.goto:
            lines.append(_edge(_ANY, ids[command.goto], "-.->", command.label))
    for followup in spec.followups:  # a timer: later, by itself
        source = ids[followup.entered] if followup.entered else _ANY
        lines.append(_edge(source, ids[followup.goto], "-.->", f"{followup.delay} later"))
    return "\n".join(lines) + "\n"


def _state_edges(state: StateSpec) -> Iterator[tuple[str, str]]:
    """(target, label) of each way out of a state, in the order the engine considers them."""
    choices = state.ask.choices if state.ask else ()
    for choice in choices:
        if choice.goto:
            yield choice.goto, choice.label
    if choices and all(c.goto for c in choices):
        return  # `next` is never taken
    if isinstance(state.next, str):
        yield state.next, ""
    else:
        for branch in state.next or ():
            yield branch.goto, _shorten(branch.if_) if branch.if_ else "else"


def _merged(edges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """One edge per target, its labels joined, in order of first appearance."""
    labels: dict[str, list[str]] = {}
    for target, label in edges:
        labels.setdefault(target, [])
        if label and label not in labels[target]:
            labels[target].append(label)
    return [(target, " / ".join(names)) for target, names in labels.items()]


def _edge(source: str, target: str, arrow: str, label: str) -> str:
    text = f'|"{_escape(label)}"|' if label else ""
    return f"    {source} {arrow}{text} {target}"


def _node_ids(spec: FlowSpec) -> dict[str, str]:
    """Mermaid-safe, unique ids for every state name, including unknown targets."""
    names = list(spec.states)
    names += [t for s in spec.states.values() for t, _ in _state_edges(s)]
    names += [c.goto for c in spec.commands if c.goto]
    names += [n for f in spec.followups for n in (f.entered, f.goto) if n]
    names += [n for n in (spec.start, spec.returning, spec.resume) if n]
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        if name in ids:
            continue
        base = "s_" + _UNSAFE.sub("_", name)
        node, n = base, 1
        while node in taken:
            n += 1
            node = f"{base}_{n}"
        ids[name] = node
        taken.add(node)
    return ids


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CONDITION_CHARS else text[: CONDITION_CHARS - 1] + "…"


def _escape(text: str) -> str:
    """Mermaid entity codes for characters that would end or confuse a quoted label."""
    return "".join(_ESCAPES.get(ch, ch) for ch in " ".join(text.split()))
