"""What a classifier learns from: each choice and command of the flows, with its example texts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bot.flows.loader import Flow
from bot.flows.schema import ChoiceSpec, CommandSpec
from bot.nlu.memo import by_identity


@dataclass(frozen=True, slots=True)
class Intent:
    """A choice or command. `key` tells apart same-id choices of different questions."""

    key: str
    id: str
    texts: tuple[str, ...]


@by_identity
def intent_key(spec: ChoiceSpec | CommandSpec) -> str:
    """The same id with other examples (e.g. 'talk' in two questions) is another intent."""
    kind = "command" if isinstance(spec, CommandSpec) else "choice"
    digest = hashlib.blake2s("\x1f".join((spec.label, *spec.examples)).encode(), digest_size=6)
    return f"{kind}:{spec.id}:{digest.hexdigest()}"


def intent_of(spec: ChoiceSpec | CommandSpec) -> Intent:
    """The label and the examples are what the classifier compares messages with."""
    return Intent(key=intent_key(spec), id=spec.id, texts=(spec.label, *spec.examples))


def intents_of(flows: Iterable[Flow]) -> Iterator[Intent]:
    """Every command and every question's choices, each distinct intent once."""
    seen: set[str] = set()
    for flow in flows:
        specs: list[ChoiceSpec | CommandSpec] = list(flow.spec.commands)
        for state in flow.spec.states.values():
            if state.ask:
                specs += state.ask.choices
        for spec in specs:
            intent = intent_of(spec)
            if intent.key not in seen:
                seen.add(intent.key)
                yield intent


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a classifier's best guess counts: similarities are on each model's own scale."""

    accept: float
    """The nearest example must be at least this similar."""
    margin: float
    """...and lead the best intent that would do something else by this much."""
    command_extra: float = 0.0
    """A guessed command that ends the conversation or forgets its answers must clear `accept`
    by this much more."""
