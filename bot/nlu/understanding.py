"""The interface between the engine and whatever understands free text, plus keyword rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.flows.schema import ChoiceSpec, CommandSpec
from bot.nlu.memo import by_identity
from bot.nlu.normalize import normalize
from bot.nlu.rules import named_choices

YES = "__yes__"
NO = "__no__"

# Refusals are checked before agreement: 「はいじゃない」 is a no.
_NO_WORDS = (
    "いいえ",
    "ちがう",
    "違う",
    "ちがいます",
    "違います",
    "でもない",
    "ではありません",
    "じゃありません",
    "思わない",
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

_NO_NORM = tuple(normalize(w) for w in _NO_WORDS)
_YES_NORM = tuple(normalize(w) for w in _YES_WORDS)

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
    if any(w in norm for w in _NO_NORM):
        return NO
    if any(w in norm for w in _YES_NORM):
        return YES
    return None


def match_command(text: str, commands: Sequence[CommandSpec]) -> str | None:
    """A command only when the message is essentially its keyword (or one of its examples).

    「やめる」 stops; 「仕事をやめるか迷ってる」 must not, so the text may not be much longer.
    """
    norm = normalize(text)
    if not norm:
        return None
    for command in commands:
        terms, examples, longest = _command_terms(command)
        if norm in examples:
            return command.id
        if len(norm) > longest + 4:  # longer than any keyword allows
            continue
        if any(key in norm and len(norm) <= len(key) + 4 for key in terms):
            return command.id
    return None


def mentioned_commands(text: str, commands: Sequence[CommandSpec]) -> tuple[CommandSpec, ...]:
    """Commands whose label or keywords appear anywhere in the message (see `match_command`)."""
    norm = normalize(text)
    return tuple(c for c in commands if norm and any(k in norm for k in _command_terms(c)[0]))


@by_identity
def _command_terms(command: CommandSpec) -> tuple[tuple[str, ...], frozenset[str], int]:
    """(normalised label and keywords, normalised examples, the longest term's length),
    worked out once per command."""
    terms = tuple(t for t in (normalize(t) for t in (command.label, *command.keywords)) if t)
    examples = frozenset(normalize(e) for e in command.examples)
    return terms, examples, max(map(len, terms), default=0)


def keyword_understander(
    text: str,
    *,
    choices: Sequence[ChoiceSpec],
    commands: Sequence[CommandSpec],
    multi: bool,
) -> Understanding:
    """Commands, then choices named by their labels, keywords or examples (see `rules`).

    A single-answer question named twice over (「経理と人事を兼務してます」) is not guessed.
    """
    command = match_command(text, commands)
    if command:
        return Understanding(command=command, score=1.0, stage="keyword")
    named = named_choices(text, choices)
    if not named or (len(named) > 1 and not multi):
        return Understanding()
    return Understanding(intents=named, score=1.0, stage="keyword")
