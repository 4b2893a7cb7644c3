"""A loaded flow: its validated spec and where each of its values came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.errors import FlowError
from bot.flows.schema import FlowSpec

Loc = tuple[str | int, ...]


class FlowErrors(FlowError):
    """Every problem found in one or more flow files."""

    def __init__(self, issues: Iterable[FlowError]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


@dataclass(frozen=True)
class Flow:
    """A validated flow with where each of its values came from."""

    spec: FlowSpec
    path: str
    version: str
    locations: Mapping[Loc, tuple[int, int]] = field(default_factory=dict)
    bare_booleans: frozenset[Loc] = frozenset()
    variant_files: Mapping[str, Flow] = field(default_factory=dict)
    """variant id: the flow of a variant given as a file of its own (`variants[].file`)."""

    @property
    def id(self) -> str:
        return self.spec.flow

    def error(self, loc: Loc, message: str) -> FlowError:
        line, column = self.where(loc)
        return FlowError(message, file=self.path, line=line, column=column)

    def where(self, loc: Loc) -> tuple[int, int]:
        """Line and column of the value at `loc`, or of its nearest ancestor."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.locations:
                return self.locations[loc[:end]]
        return (0, 0)
