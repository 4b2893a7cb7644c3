"""A/B variants: a flow's `variants:` resolved at load time into one plain flow per variant,
and the deterministic choice of a variant for a user (the engine never sees variants)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bot.flows.flow import Flow, Loc

NO_VARIANT = ""
"""The variant id of a flow without variants (and of facts recorded before any)."""


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: int
    flow: Flow  # the whole flow as this variant has it (no `variants` of its own)


def resolve(flow: Flow) -> tuple[Variant, ...]:
    """One flow per variant; a flow without variants is its own single variant ''.

    A variant's flow keeps the file's version (facts carry the variant beside it) and maps
    the locations of its replacement states to their lines under `variants:`, so a lint
    error in a variant names the line where the variant says it."""
    spec = flow.spec
    if not spec.variants:
        return (Variant(NO_VARIANT, 1, flow),)
    resolved = []
    for index, variant in enumerate(spec.variants):
        whole = flow.variant_files.get(variant.id)
        if whole is not None:  # a file of its own: the variant as it is written there
            plain = whole.spec.model_copy(update={"variants": ()})
            resolved.append(
                Variant(variant.id, variant.weight, dataclasses.replace(whole, spec=plain))
            )
            continue
        locations: dict[Loc, tuple[int, int]] = dict(flow.locations)
        prefix: Loc = ("variants", index, "states")
        for loc, where in flow.locations.items():
            if loc[: len(prefix)] == prefix and len(loc) > len(prefix):
                locations[("states", *loc[len(prefix) :])] = where
        varied = spec.model_copy(
            update={
                "states": {**spec.states, **variant.states},
                "vars": {**spec.vars, **variant.vars},
                "variants": (),
            }
        )
        resolved.append(
            Variant(
                variant.id,
                variant.weight,
                Flow(
                    spec=varied,
                    path=flow.path,
                    version=flow.version,
                    locations=locations,
                    bare_booleans=flow.bare_booleans,
                ),
            )
        )
    return tuple(resolved)


class Weighted(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=Weighted)


def assign(variants: Sequence[W], *, flow: str, channel: str, address: str) -> W:
    """The user's variant: the same for the same user as long as the weights stay."""
    total = sum(v.weight for v in variants)
    if len(variants) == 1 or total == 0:
        return variants[0]
    digest = hashlib.sha256(f"{flow}\0{channel}\0{address}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return variants[-1]
