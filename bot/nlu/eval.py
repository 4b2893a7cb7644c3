"""Measure an understander on a labelled YAML file (layout: see tests/nlu/dev.yaml).

    flow: career
    states:
      <question state>:
        <choice or command id>: [messages...]   # "a+b": a multi-select message with both
        _reject: [messages...]                  # off-topic: must not be taken as an answer

Each message is understood as the engine would understand it in that state. Verdicts:
`correct` (a rejected off-topic message is correct; so is one answered as a question to the bot
or small talk, which takes no answer either), `rejected` (not understood: the bot asks
again, which is safe), `partial` (a multi-select message with some of its answers), `wrong`
(another answer; *confidently* wrong unless the bot asked 「〜ということですね？」 first).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import yaml

from bot.errors import FlowError
from bot.flows.loader import Flow
from bot.flows.schema import ChoiceSpec, CommandSpec, QuestionSpec
from bot.nlu.understanding import Understander

REJECT: Final = "_reject"
Verdict = Literal["correct", "rejected", "partial", "wrong"]


@dataclass(frozen=True, slots=True)
class Case:
    state: str
    text: str
    expected: tuple[str, ...]  # () for a message that must be rejected


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    got: tuple[str, ...]
    confirm: bool
    stage: str
    verdict: Verdict

    @property
    def confidently_wrong(self) -> bool:
        return self.verdict == "wrong" and not self.confirm


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]

    @property
    def total(self) -> int:
        return len(self.results)

    def count(self, verdict: Verdict) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def accuracy(self) -> float:
        return self.count("correct") / self.total if self.total else 0.0

    @property
    def wrong_confident_rate(self) -> float:
        wrong = sum(r.confidently_wrong for r in self.results)
        return wrong / self.total if self.total else 0.0

    def summary(self) -> str:
        n = self.total
        confirmed = sum(r.verdict == "wrong" and r.confirm for r in self.results)
        lines = [
            f"messages: {n}",
            f"accuracy: {self.accuracy:.1%} ({self.count('correct')}/{n}; "
            "a rejected off-topic message counts as correct)",
            f"wrong-confident rate: {self.wrong_confident_rate:.1%} "
            f"({sum(r.confidently_wrong for r in self.results)}/{n})",
            f"wrong but confirmed first: {confirmed}; not understood (asked again): "
            f"{self.count('rejected')}; multi-select partly understood: {self.count('partial')}",
        ]
        stages = Counter(r.stage for r in self.results)
        lines.append("decided by: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())))
        return "\n".join(lines)

    def confusion(self) -> str:
        """Per state: expected (rows) against understood (columns); '-' is none.

        A multi-select message counts once per answer it carries: found (diagonal), missed
        (column '-'), and once per extra answer it was given (in its first expected row).
        """
        by_state: dict[str, list[Result]] = defaultdict(list)
        for result in self.results:
            by_state[result.case.state].append(result)
        blocks = []
        for state, results in by_state.items():
            counts: Counter[tuple[str, str]] = Counter()
            for r in results:
                counts.update(_pairs(r.case.expected, r.got))
            rows = list(dict.fromkeys(row for row, _ in counts))
            columns = list(dict.fromkeys([*rows, *(column for _, column in counts)]))
            first = max(len(x) for x in [*rows, state]) + 1
            cell = {c: max(len(c), 3) + 1 for c in columns}
            lines = [state.ljust(first) + "".join(c.rjust(cell[c]) for c in columns)]
            for row in rows:
                cells = (str(counts[(row, c)] or ".").rjust(cell[c]) for c in columns)
                lines.append(row.ljust(first) + "".join(cells))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def mistakes(self) -> str:
        """The wrong and partly understood messages, one a line (for a developer's eyes)."""
        return "\n".join(
            f"{r.case.state}: {r.case.text!r} expected {_label(r.case.expected)}, "
            f"got {_label(r.got)}{' (confirmed first)' if r.confirm else ''} [{r.stage}]"
            for r in self.results
            if r.verdict in ("wrong", "partial")
        )


def load_cases(path: Path) -> tuple[str, list[Case]]:
    """(flow id, cases) from a labelled file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("states"), dict):
        raise FlowError("a labelled file needs 'flow' and a 'states' mapping", file=str(path))
    cases = []
    for state, groups in data["states"].items():
        for expected, messages in (groups or {}).items():
            if isinstance(expected, bool):
                raise FlowError(
                    f"state '{state}': a bare yes/no key is read by YAML as a boolean: quote it",
                    file=str(path),
                )
            label = str(expected)
            ids = () if label == REJECT else tuple(label.split("+"))
            cases += [Case(str(state), str(m), ids) for m in messages or ()]
    return str(data.get("flow", "")), cases


def evaluate(understand: Understander, flow: Flow, cases: Sequence[Case]) -> Report:
    """Understand every case in its state, as the engine would."""
    results = []
    for case in cases:
        state = flow.spec.states.get(case.state)
        if state is None or state.ask is None:
            raise FlowError(
                f"labelled state '{case.state}' is not a question of flow '{flow.id}'",
                file=str(flow.path),
            )
        ask = state.ask
        commands = _commands_for(flow, ask)
        understood = understand(
            case.text,
            choices=ask.choices,
            commands=commands,
            multi=ask.multi,
            faqs=flow.spec.faq,
        )
        # A question to the bot or small talk is answered and the question asked again: like a
        # rejected message, nothing is taken as an answer.
        got = (understood.command,) if understood.command else understood.intents
        expected = _canonical(case.expected, ask, commands)
        canonical_got = _canonical(got, ask, commands)
        results.append(
            Result(
                case=Case(case.state, case.text, expected),
                got=canonical_got,
                confirm=understood.confirm,
                stage=understood.stage,
                verdict=_verdict(expected, canonical_got),
            )
        )
    return Report(tuple(results))


def _commands_for(flow: Flow, ask: QuestionSpec) -> tuple[CommandSpec, ...]:
    commands = flow.spec.commands
    return tuple(c for c in commands if c.id in ask.accepts) if ask.accepts else commands


def _canonical(
    ids: tuple[str, ...], ask: QuestionSpec, commands: Sequence[CommandSpec]
) -> tuple[str, ...]:
    """A command counts as the choice that leads to the same place (`restart` = 「最初から」)."""
    by_id = {c.id: c for c in commands}
    out = []
    for intent in ids:
        command = by_id.get(intent)
        twin = _twin(command, ask.choices) if command else None
        out.append(twin.id if twin else intent)
    return tuple(sorted(set(out)))


def _twin(command: CommandSpec, choices: Sequence[ChoiceSpec]) -> ChoiceSpec | None:
    if not command.goto:
        return None
    return next((c for c in choices if c.goto == command.goto and c.reset == command.reset), None)


def _verdict(expected: tuple[str, ...], got: tuple[str, ...]) -> Verdict:
    if got == expected:
        return "correct"
    if not got:
        return "rejected"
    if set(got) < set(expected):
        return "partial"
    return "wrong"


def _pairs(expected: tuple[str, ...], got: tuple[str, ...]) -> list[tuple[str, str]]:
    if not expected:
        return [("-", g) for g in got] or [("-", "-")]
    pairs = [(e, e if e in got else "-") for e in expected]
    return pairs + [(expected[0], g) for g in got if g not in expected]


def _label(ids: tuple[str, ...]) -> str:
    return "+".join(ids) if ids else "-"
