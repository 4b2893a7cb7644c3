"""The interface between the engine and whatever understands free text, plus keyword rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.flows.schema import ChoiceSpec, CommandSpec
from bot.nlu.normalize import normalize

YES = "__yes__"
NO = "__no__"

# Refusals are checked before agreement: 「はいじゃない」 is a no.
_NO_WORDS = (
    "いいえ",
    "ちがう",
    "違う",
    "ちゃう",
    "じゃない",
    "ではない",
    "いや",
    "no",
    "だめ",
    "ううん",
)
_YES_WORDS = (
    "はい",
    "うん",
    "そう",
    "yes",
    "ok",
    "おk",
    "ええ",
    "あってる",
    "合ってる",
    "その通り",
    "そのとおり",
)

Stage = Literal["button", "keyword", "classifier", "none"]


@dataclass(frozen=True)
class Understanding:
    """What a message meant: choice ids (several for multi-select), or a command."""

    intents: tuple[str, ...] = ()
    command: str | None = None
    score: float = 0.0
    stage: Stage = "none"
    confirm: bool = False  # a guess worth checking with the user before acting on it


class Understander(Protocol):
    def __call__(
        self,
        text: str,
        *,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        multi: bool,
    ) -> Understanding: ...


def yes_or_no(text: str) -> str | None:
    """`YES`, `NO` or None for a reply to a 「〜ということですね？」 check."""
    norm = normalize(text)
    if any(normalize(w) in norm for w in _NO_WORDS):
        return NO
    if any(normalize(w) in norm for w in _YES_WORDS):
        return YES
    return None


def match_command(text: str, commands: Sequence[CommandSpec]) -> str | None:
    """A command only when the message is essentially its keyword.

    「やめる」 stops; 「仕事をやめるか迷ってる」 must not, so the text may not be much longer.
    """
    norm = normalize(text)
    if not norm:
        return None
    for command in commands:
        for term in (command.label, *command.keywords):
            key = normalize(term)
            if key and key in norm and len(norm) <= len(key) + 4:
                return command.id
    return None


def keyword_understander(
    text: str,
    *,
    choices: Sequence[ChoiceSpec],
    commands: Sequence[CommandSpec],
    multi: bool,
) -> Understanding:
    """Choices whose label, keywords or examples appear in the text."""
    command = match_command(text, commands)
    if command:
        return Understanding(command=command, score=1.0, stage="keyword")
    norm = normalize(text)
    hits: dict[str, int] = {}
    for choice in choices:
        for term in (choice.label, choice.id, *choice.keywords, *choice.examples):
            key = normalize(term)
            if key and key in norm:
                hits[choice.id] = max(hits.get(choice.id, 0), len(key))
    if not hits:
        return Understanding()
    if multi:
        return Understanding(
            intents=tuple(c.id for c in choices if c.id in hits), score=1.0, stage="keyword"
        )
    ranked = sorted(hits.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return Understanding()  # two choices equally likely: ask back rather than guess
    return Understanding(intents=(ranked[0][0],), score=1.0, stage="keyword")
