"""The interface between the engine and whatever understands free text, plus keyword rules."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self

from bot.flows.schema import ChoiceSpec, CommandSpec, FaqSpec
from bot.nlu.memo import by_identity
from bot.nlu.normalize import normalize
from bot.nlu.reading import has_kanji, reading
from bot.nlu.rules import named_choices, negated, segment

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
    faq: str | None = None  # a question to the bot (or small talk): answer it, ask again


class Understander(Protocol):
    def __call__(
        self,
        text: str,
        *,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        multi: bool,
        faqs: Sequence[FaqSpec] = (),
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
    """A command when the message is essentially its keyword (or one of its examples), or
    holds one of its `phrases` not negated; as written, else as read in kana.

    「やめる」 stops; 「仕事をやめるか迷ってる」 must not, so the text may not be much longer.
    「キャリアアドバイザーさんと話せますか」 holds the agent's phrase 「アドバイザーさんと話せ」.
    """
    norm = normalize(text)
    if not norm:
        return None
    found = _match_command(text, norm, commands, read=False)
    if found is None:
        found = _match_command(text, reading(text), commands, read=True)
    return found


def mentioned_commands(text: str, commands: Sequence[CommandSpec]) -> tuple[CommandSpec, ...]:
    """Commands whose label or keywords appear anywhere in the message (see `match_command`)."""
    norm = normalize(text)
    return tuple(
        c for c in commands if norm and any(k in norm for k in _command_terms(c, False).words)
    )


def match_faq(text: str, faqs: Sequence[FaqSpec], *, named: bool) -> str | None:
    """The flow's answer to a question to the bot (「お金かかる？」「秘書検定って何？」).

    A `question` entry counts when its keyword is in the message and the message asks (ends
    like a question) or names no answer; `small_talk` (「こんにちは」「ありがとう」) only when
    the message is essentially its keyword and names no answer.
    """
    norm = normalize(text)
    if not norm or not faqs:
        return None
    asking = is_question(text)
    read = reading(text, fold=False)
    for faq in faqs:
        terms = _faq_terms(faq)
        if faq.kind == "question":
            if (asking or not named) and terms.anywhere(norm, read):
                return faq.id
        elif not named and (
            any(t in norm and len(norm) <= len(t) + 4 for t in terms.written)
            or any(t in read and len(read) <= len(t) + 4 for t in terms.kana)
        ):
            return faq.id
    return None


def small_talk(text: str, faqs: Sequence[FaqSpec]) -> str | None:
    """A `small_talk` entry whose keyword is anywhere in a message nothing else understood."""
    norm, read = normalize(text), reading(text, fold=False)
    for faq in faqs:
        if faq.kind != "small_talk":
            continue
        if _faq_terms(faq).anywhere(norm, read):
            return faq.id
    return None


def is_question(text: str) -> bool:
    """Ends like a question: 「？」, 「〜の」, 「〜か」, 「〜って何」, 「〜とは」…"""
    if re.search(r"[?？]\s*$", text):
        return True
    norm = normalize(text)
    return norm.endswith(_QUESTION_ENDINGS)


_QUESTION_ENDINGS = tuple(
    normalize(w)
    for w in (
        "ですか",
        "ますか",
        "でしょうか",
        "のか",
        "なの",
        "って何",
        "ってなに",
        "ってなん",
        "とは",
        "何",
        "なに",
        "の",
        "かい",
    )
)


def _match_command(
    text: str, norm: str, commands: Sequence[CommandSpec], *, read: bool
) -> str | None:
    parts = _nearly_whole(norm)
    for command_id, terms in _terms_of(commands, read):
        if norm in terms.examples:
            return command_id
        if not terms.words.isdisjoint(parts):
            return command_id
        if terms.any_phrase is not None and terms.any_phrase.search(norm):
            segmented = segment(text, read=read)
            for phrase in terms.phrases:
                start = segmented.text.find(phrase)
                if start >= 0 and not negated(segmented, start, start + len(phrase)):
                    return command_id
    return None


def _terms_of(commands: Sequence[CommandSpec], read: bool) -> tuple[tuple[str, _CommandTerms], ...]:
    """(id, terms) of each command, in order: looked up once per tuple of commands (the same
    few tuples every turn), not once per command."""
    if not isinstance(commands, tuple):  # a list may change: worked out each time
        return tuple((c.id, _command_terms(c, read)) for c in commands)
    return _read_terms_of(commands) if read else _written_terms_of(commands)


@by_identity
def _written_terms_of(commands: tuple[CommandSpec, ...]) -> tuple[tuple[str, _CommandTerms], ...]:
    return tuple((c.id, _command_terms_written(c)) for c in commands)


@by_identity
def _read_terms_of(commands: tuple[CommandSpec, ...]) -> tuple[tuple[str, _CommandTerms], ...]:
    return tuple((c.id, _command_terms_read(c)) for c in commands)


def _nearly_whole(norm: str) -> frozenset[str]:
    """Every part of `norm` at most 4 characters shorter than it (at most 15): a command's word
    found among them is in a short message that says little else."""
    size = len(norm)
    return frozenset(
        norm[start : start + length]
        for length in range(max(1, size - 4), size + 1)
        for start in range(size - length + 1)
    )


@dataclass(frozen=True)
class _CommandTerms:
    """A command's words, normalised (or read) once: label and keywords, examples, and its
    phrases with one pattern finding any of them."""

    # A set, looked up with a message's nearly whole parts: a command has hundreds of words and
    # testing each for `in message` was a tenth of the engine's time.
    words: frozenset[str]
    examples: frozenset[str]
    phrases: tuple[str, ...]
    # `{a|b}` alternatives expand to hundreds of phrases; one compiled alternation scans a
    # message for all of them in C, ten times faster than testing each in turn.
    any_phrase: re.Pattern[str] | None

    @classmethod
    def of(cls, words: Iterable[str], examples: Iterable[str], phrases: Iterable[str]) -> Self:
        unique = tuple(p for p in dict.fromkeys(phrases) if p)
        longest_first = sorted(unique, key=len, reverse=True)
        return cls(
            words=frozenset(w for w in words if w),
            examples=frozenset(examples),
            phrases=unique,
            any_phrase=_any_of(longest_first),
        )


@by_identity
def _command_terms_written(command: CommandSpec) -> _CommandTerms:
    return _CommandTerms.of(
        (normalize(t) for t in (command.label, *command.keywords)),
        (normalize(e) for e in command.examples),
        (normalize(p) for p in expand(command.phrases)),
    )


@by_identity
def _command_terms_read(command: CommandSpec) -> _CommandTerms:
    # Only words with kanji: kana ones are matched as written already (see `rules._readings`).
    written = (command.label, *command.keywords)
    return _CommandTerms.of(
        (reading(t) for t in written if has_kanji(t)),
        (reading(e) for e in command.examples if has_kanji(e)),
        (reading(p) for p in expand(command.phrases) if has_kanji(p)),
    )


def _command_terms(command: CommandSpec, read: bool) -> _CommandTerms:
    return _command_terms_read(command) if read else _command_terms_written(command)


@dataclass(frozen=True)
class _FaqTerms:
    """An entry's keywords: written (normalised) and the kana readings of those with kanji,
    with one pattern each finding any of them in a message."""

    written: tuple[str, ...]
    kana: tuple[str, ...]
    any_written: re.Pattern[str] | None
    any_kana: re.Pattern[str] | None

    @classmethod
    def of(cls, written: Iterable[str], kana: Iterable[str]) -> Self:
        words, readings = tuple(written), tuple(kana)
        return cls(words, readings, _any_of(words), _any_of(readings))

    def anywhere(self, norm: str, read: str) -> bool:
        """A keyword anywhere in the message, as written or as read."""
        return bool(
            (self.any_written is not None and self.any_written.search(norm))
            or (self.any_kana is not None and self.any_kana.search(read))
        )


def _any_of(words: Sequence[str]) -> re.Pattern[str] | None:
    """One pattern finding any of `words` (the first listed wins where two start together)."""
    return re.compile("|".join(map(re.escape, words))) if words else None


@by_identity
def _faq_terms(faq: FaqSpec) -> _FaqTerms:
    """Normalised once per entry. Readings are matched against the message's unfolded reading
    (long vowels kept): folded, 「有料」 would be found in 「入力」."""
    keywords = expand(faq.keywords)
    written = (t for t in dict.fromkeys(normalize(k) for k in keywords) if len(t) >= 2)
    kana = (reading(k, fold=False) for k in keywords if has_kanji(k))
    return _FaqTerms.of(written, (t for t in dict.fromkeys(kana) if len(t) >= 3))


_ALTERNATIVES = re.compile(r"\{([^{}]*)\}")


def expand(patterns: Sequence[str]) -> list[str]:
    """'{人|人間}と話したい' -> ['人と話したい', '人間と話したい']."""
    out: list[str] = []
    for pattern in patterns:
        pieces = _ALTERNATIVES.split(pattern)
        options = [p.split("|") if i % 2 else [p] for i, p in enumerate(pieces)]
        out += ["".join(parts) for parts in itertools.product(*options)]
    return out


def keyword_understander(
    text: str,
    *,
    choices: Sequence[ChoiceSpec],
    commands: Sequence[CommandSpec],
    multi: bool,
    faqs: Sequence[FaqSpec] = (),
) -> Understanding:
    """Commands, questions to the bot, then choices named by their words (see `rules`).

    A single-answer question named twice over (「経理と人事を兼務してます」) is not guessed.
    """
    command = match_command(text, commands)
    if command:
        return Understanding(command=command, score=1.0, stage="keyword")
    named = named_choices(text, choices)
    faq = match_faq(text, faqs, named=bool(named))
    if faq:
        return Understanding(faq=faq, score=1.0, stage="keyword")
    if not named:
        talk = small_talk(text, faqs)
        return Understanding(faq=talk, score=1.0, stage="keyword") if talk else Understanding()
    if len(named) > 1 and not multi:
        return Understanding()
    return Understanding(intents=named, score=1.0, stage="keyword")
