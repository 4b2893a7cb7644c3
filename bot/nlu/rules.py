"""Keyword rules: which choices a message names by their precise words.

Rules, in order:
1. A message that is exactly one of a choice's examples (or its id) names that choice.
2. Labels, keywords and longer examples are found anywhere in the message; a hit inside a
   longer hit of another choice does not count (「経理事務」 names 経理, not 一般事務's 「事務」; 「転職はしない」 names
   stay, not change's 「転職」).
3. Refusals before agreement: when a choice is named by a refusal word (違う, ちゃう, じゃない,
   いいえ…), choices named only by other words drop out, so 「好きじゃない」 is a no even though
   「好き」 is a yes keyword.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from bot.flows.schema import ChoiceSpec
from bot.nlu.memo import by_identity
from bot.nlu.normalize import normalize

REFUSALS: Final = ("いいえ", "違う", "ちがう", "ちゃう", "じゃない", "ではない", "ううん", "いや")
"""Words that turn an answer into a refusal; a keyword containing one is a refusal keyword."""

MIN_EXAMPLE_HIT: Final = 4
"""An example this long (normalised) found inside a message names its choice like a keyword."""

_REFUSALS_NORM: Final = tuple(normalize(w) for w in REFUSALS)


@dataclass(frozen=True, slots=True)
class Hit:
    """A label or keyword of `choice` found at text[start:end] (normalised text)."""

    choice: str
    start: int
    end: int
    refusal: bool

    def inside(self, other: Hit) -> bool:
        return (
            other.start <= self.start
            and self.end <= other.end
            and (other.end - other.start) > (self.end - self.start)
        )


def named_choices(text: str, choices: Sequence[ChoiceSpec]) -> tuple[str, ...]:
    """Ids of the choices the message names, in the question's order, after the rules above."""
    norm = normalize(text)
    if not norm:
        return ()
    exact = [c.id for c in choices if norm == c.id or norm in _vocabulary(c).examples]
    if len(exact) == 1:
        return (exact[0],)
    hits = list(
        _hits(norm, _term_index(choices) if isinstance(choices, tuple) else _index(choices))
    )
    hits = [h for h in hits if not any(h.inside(o) for o in hits if o.choice != h.choice)]
    refusing = {h.choice for h in hits if h.refusal}
    if refusing:
        hits = [h for h in hits if h.choice in refusing]
    named = {h.choice for h in hits} | set(exact)
    return tuple(c.id for c in choices if c.id in named)


def is_refusal(term: str) -> bool:
    norm = normalize(term)
    return any(r in norm for r in _REFUSALS_NORM)


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    terms: tuple[tuple[str, bool], ...]  # (normalised term, is a refusal)
    examples: frozenset[str]


@by_identity
def _vocabulary(choice: ChoiceSpec) -> _Vocabulary:
    """A choice's terms, normalised once (flows are immutable, so are their choices)."""
    examples = [normalize(e) for e in choice.examples]
    terms = [normalize(t) for t in (choice.label, *choice.keywords)]
    terms += [e for e in examples if len(e) >= MIN_EXAMPLE_HIT]
    unique = dict.fromkeys(t for t in terms if t)
    return _Vocabulary(tuple((t, is_refusal(t)) for t in unique), frozenset(examples))


_TermIndex = dict[str, tuple[tuple[str, str, bool], ...]]
"""First character of a term -> (choice id, term, is a refusal) for every term starting so."""


def _index(choices: Sequence[ChoiceSpec]) -> _TermIndex:
    index: dict[str, list[tuple[str, str, bool]]] = {}
    for choice in choices:
        for key, refusal in _vocabulary(choice).terms:
            index.setdefault(key[0], []).append((choice.id, key, refusal))
    return {first: tuple(terms) for first, terms in index.items()}


@by_identity
def _term_index(choices: tuple[ChoiceSpec, ...]) -> _TermIndex:
    """A question's choices (a tuple, as flows hold them) are indexed once."""
    return _index(choices)


def _hits(norm: str, index: _TermIndex) -> Iterable[Hit]:
    """Every occurrence of every term; only terms starting with a character of `norm` can occur."""
    for first in set(norm):
        for choice, key, refusal in index.get(first, ()):
            start = norm.find(key)
            while start >= 0:
                yield Hit(choice, start, start + len(key), refusal)
                start = norm.find(key, start + 1)
