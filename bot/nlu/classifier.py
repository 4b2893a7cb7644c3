"""The understander the server runs: keyword rules first, then nearest examples, else ask back.

A message is understood in this order:
1. a global command said in so many words (`match_command`): 「やめる」, 「担当者と話したい」;
2. choices named by keyword (`bot.nlu.rules`); a single-answer question named twice over (or a
   choice and a command both named) is settled by the classifier between those, or asked back;
3. the classifier, restricted to what the question accepts (its choices and the commands it
   accepts): the nearest example's intent wins if its similarity reaches `accept` and leads the
   best intent that would do something else by `margin`. Otherwise nothing is understood, and
   the engine shows the choices again (with the agent button after repeated misses).
In a multi-select question each clause of the message is understood on its own, so
「評価もされないし成長もしない」 records both; an answer only the classifier found is confirmed
(「〜ということですね？」) before it is recorded.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from bot.errors import ConfigError
from bot.flows.loader import Flow
from bot.flows.schema import ChoiceSpec, CommandSpec, FaqSpec
from bot.nlu.intents import Intent, Thresholds, intent_key, intents_of
from bot.nlu.ngram import NgramClassifier
from bot.nlu.normalize import normalize
from bot.nlu.offtopic import FINISHED, OFF_TOPIC
from bot.nlu.rules import named_choices
from bot.nlu.understanding import (
    Understanding,
    match_command,
    match_faq,
    mentioned_commands,
    small_talk,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL: Final = "use"
"""The sentence encoder chosen by measuring on tests/nlu/dev.yaml (README, "The model, and the figures")."""

THRESHOLDS: Final[dict[str, Thresholds]] = {
    # Chosen on tests/nlu/dev.yaml (README has the sweep). e5's cosines crowd into
    # 0.8-0.95; the n-gram fallback leaves rejecting mostly to the off-topic examples.
    "use": Thresholds(accept=0.45, margin=0.03, command_extra=0.25),
    "e5": Thresholds(accept=0.89, margin=0.005, command_extra=0.04),
    "ngram": Thresholds(accept=0.15, margin=0.03, command_extra=0.20),
}

_CLAUSE_BREAK: Final = re.compile(
    r"[、。,.!！?？\n\s・/]+"
    r"|(?<=[いだた])し(?=[^いたてまよゃょ]|$)"  # 「〜ないし」「〜だし」「〜たし」: and also
    r"|けれども|けれど|けど|それに|しかも|のに"
)
_MIN_CLAUSE: Final = 3  # normalised characters; 「で」「あと」 alone say nothing


class Classifier(Protocol):
    """Scores messages against the examples of the intents it was built with."""

    name: str
    thresholds: Thresholds

    def knows(self, key: str) -> bool: ...

    def scores(self, texts: Sequence[str], keys: Sequence[str]) -> list[dict[str, float]]:
        """For each text, a similarity per intent key (only keys it knows)."""
        ...


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: str
    id: str
    is_command: bool
    outcome: tuple[str, bool] | None  # (goto, reset): a choice and a command can mean the same
    drastic: bool = False  # a command that ends the conversation or forgets the answers


class NluUnderstander:
    """An `Understander` (see `bot.nlu.understanding`) backed by a `Classifier`."""

    def __init__(self, classifier: Classifier, *, drastic: Iterable[str] = ()) -> None:
        self.classifier = classifier
        # Keys of commands that end the conversation or forget its answers (`stop`,
        # `restart`): a guess of one of those must clear a higher bar (`command_extra`).
        self.drastic = frozenset(drastic)

    def __call__(
        self,
        text: str,
        *,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        multi: bool,
        faqs: Sequence[FaqSpec] = (),
    ) -> Understanding:
        command = match_command(text, commands)
        if command:
            return Understanding(command=command, score=1.0, stage="keyword")
        named = named_choices(text, choices)
        faq = match_faq(text, faqs, named=bool(named))
        if faq:
            return Understanding(faq=faq, score=1.0, stage="keyword")
        if multi:
            understood = self._multi(text, choices, commands)
        else:
            understood = self._single(text, named, choices, commands)
        if not understood.intents and not understood.command:
            talk = small_talk(text, faqs)
            if talk:
                return Understanding(faq=talk, score=1.0, stage="keyword")
        return understood

    def _single(
        self,
        text: str,
        named: tuple[str, ...],
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
    ) -> Understanding:
        mentioned = mentioned_commands(text, commands) if named else ()
        if len(named) == 1 and not mentioned:
            return Understanding(intents=named, score=1.0, stage="keyword")
        if named:
            # Named twice over (「経理と人事を兼務」, 「スタッフと話したい」 where 「したい」 is a yes):
            # the classifier settles it between those, or the question is asked again.
            between = [c for c in choices if c.id in named]
            return self._classify(text, between, mentioned)[0]
        return self._classify(text, choices, commands)[0]

    # ------------------------------------------------------------ steps

    def _multi(
        self, text: str, choices: Sequence[ChoiceSpec], commands: Sequence[CommandSpec]
    ) -> Understanding:
        whole = named_choices(text, choices)
        if not whole:
            # A whole message may still be a command in other words (「人に相談できますか」),
            # or say it is all (「これだけかな」): the engine finishes on that itself.
            guess, nearest = self._classify(text, choices, commands, rejects=_MULTI_REJECTS)
            if guess.command:
                return guess
            if nearest is _FINISHED:
                return Understanding(score=guess.score)
        picked: dict[str, float] = {c: 1.0 for c in whole}
        guessed: set[str] = set()
        clauses = split_clauses(text)
        for clause in clauses:
            named = named_choices(clause, choices)
            for choice in named:
                picked.setdefault(choice, 1.0)
            if named:
                continue
            guess, _ = self._classify(clause, choices, (), rejects=_MULTI_REJECTS)
            for choice in guess.intents:
                if choice not in picked:
                    picked[choice] = guess.score
                    guessed.add(choice)
        if not picked:
            return Understanding()
        intents = tuple(c.id for c in choices if c.id in picked)
        return Understanding(
            intents=intents,
            score=min(picked.values()),
            stage="classifier" if guessed else "keyword",
            confirm=bool(guessed),
        )

    def _classify(
        self,
        text: str,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        *,
        rejects: Sequence[_Candidate] = (),
    ) -> tuple[Understanding, _Candidate | None]:
        """The nearest intent if it clears the thresholds; also the nearest, cleared or not."""
        specs: list[ChoiceSpec | CommandSpec] = [*choices, *commands]
        candidates = [_candidate(c, self.drastic) for c in specs]
        known = [c for c in candidates if self.classifier.knows(c.key)]
        if len(known) < len(candidates):
            unknown = sorted(c.id for c in candidates if c not in known)
            log.warning("nlu: no examples indexed for %s; only keywords find them", unknown)
        if not known or not normalize(text):
            return Understanding(), None
        known += rejects or (_OFF_TOPIC,)
        scores = self.classifier.scores([text], [c.key for c in known])[0]
        ranked = sorted(known, key=lambda c: -scores.get(c.key, 0.0))
        best = ranked[0]
        top = scores.get(best.key, 0.0)
        rival = next((c for c in ranked[1:] if not _same_outcome(c, best)), None)
        lead = top - scores.get(rival.key, 0.0) if rival else top
        log.debug(
            "nlu: best=%s %.3f rival=%s lead=%.3f",
            best.id,
            top,
            rival.id if rival else "-",
            lead,
        )
        bar = self.classifier.thresholds
        needed = bar.accept + (bar.command_extra if best.drastic else 0.0)
        if best.id == "" or top < needed or lead < bar.margin:  # "": a reject class
            return Understanding(score=top), best
        if best.is_command:
            # A choice meaning the same (the summary's 「最初からやり直す」 and `restart`) is the
            # better answer: it also fills the question's slot.
            twin = next((c for c in ranked if not c.is_command and _same_outcome(c, best)), None)
            if twin is None:
                return Understanding(command=best.id, score=top, stage="classifier"), best
            best = twin
        return Understanding(intents=(best.id,), score=top, stage="classifier"), best


def split_clauses(text: str) -> list[str]:
    """「評価もされないし、成長もしない」 -> 「評価もされない」「成長もしない」."""
    parts = [p for p in _CLAUSE_BREAK.split(text) if len(normalize(p)) >= _MIN_CLAUSE]
    return parts or [text]


def build_understander(
    flows: Iterable[Flow], *, model: str = DEFAULT_MODEL, cache_dir: Path | None = None
) -> NluUnderstander:
    """Index the examples of `flows` once, with the sentence encoder `model` if it loads.

    `model` is 'use', 'e5' or 'ngram'. When the model's package is missing or will not load,
    the pure-Python n-gram classifier takes over (logged as a warning). `cache_dir` (e.g.
    `default_cache_dir()`) keeps the example embeddings between starts, keyed by the model and
    the examples' text; within a process they are kept in memory either way.
    """
    flows = list(flows)
    intents = [*intents_of(flows), OFF_TOPIC, FINISHED]
    started = time.perf_counter()
    classifier = _classifier(model, intents, cache_dir)
    log.info(
        "nlu: classifier %s over %d intents ready in %.2f s",
        classifier.name,
        len(intents),
        time.perf_counter() - started,
    )
    return NluUnderstander(classifier, drastic=_drastic_commands(flows))


def default_cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/yarigai, else ~/.cache/yarigai; None when there is no home at all."""
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        return Path(base or Path.home() / ".cache") / "yarigai"
    except RuntimeError:  # no HOME: embed at every start instead
        return None


def _classifier(model: str, intents: list[Intent], cache_dir: Path | None) -> Classifier:
    if model not in THRESHOLDS:
        raise ConfigError(f"unknown NLU model '{model}'; known: {', '.join(THRESHOLDS)}")
    if model != "ngram":
        try:
            from bot.nlu.encoders import EmbeddingClassifier, EncoderUnavailable, load_encoder
        except ImportError as exc:  # numpy itself is missing
            log.warning("nlu: sentence encoders unavailable (%s); using character n-grams", exc)
        else:
            try:
                encoder = load_encoder(model)
            except EncoderUnavailable as exc:
                log.warning("nlu: %s; using character n-grams", exc)
            else:
                return EmbeddingClassifier(
                    encoder, intents, thresholds=THRESHOLDS[model], cache_dir=cache_dir
                )
    return NgramClassifier(intents, thresholds=THRESHOLDS["ngram"])


_OFF_TOPIC: Final = _Candidate(OFF_TOPIC.key, OFF_TOPIC.id, False, None)
_FINISHED: Final = _Candidate(FINISHED.key, FINISHED.id, False, None)
_MULTI_REJECTS: Final = (_OFF_TOPIC, _FINISHED)


def _candidate(spec: ChoiceSpec | CommandSpec, drastic: frozenset[str]) -> _Candidate:
    outcome = (spec.goto, spec.reset) if spec.goto else None
    key = intent_key(spec)
    return _Candidate(key, spec.id, isinstance(spec, CommandSpec), outcome, key in drastic)


def _drastic_commands(flows: Iterable[Flow]) -> Iterator[str]:
    for flow in flows:
        states = flow.spec.states
        for command in flow.spec.commands:
            target = states.get(command.goto) if command.goto else None
            if command.reset or (target is not None and target.end):
                yield intent_key(command)


def _same_outcome(a: _Candidate, b: _Candidate) -> bool:
    return a.outcome is not None and a.outcome == b.outcome
