"""Proportions with 95 % Wilson intervals, and whether two of them differ significantly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

Z95: Final = 1.959963984540054
"""The normal quantile of a two-sided 95 % interval."""


@dataclass(frozen=True, slots=True)
class Proportion:
    hits: int
    total: int

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.total)


def wilson(hits: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of hits/total ((0, 0) when there is nothing to go on)."""
    if total <= 0:
        return (0.0, 0.0)
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_sided_p(a: Proportion, b: Proportion) -> float | None:
    """The p-value of a two-proportion z-test (pooled); None when either side is empty."""
    if a.total == 0 or b.total == 0:
        return None
    pooled = (a.hits + b.hits) / (a.total + b.total)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a.total + 1 / b.total))
    if spread == 0:
        return 1.0
    z = (a.rate - b.rate) / spread
    return math.erfc(abs(z) / math.sqrt(2))
