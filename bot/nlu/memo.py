"""A cache keyed by object identity, for what is worked out once per flow object.

Flow models are frozen pydantic models: hashing one (as `functools.lru_cache` does) hashes every
field, nested tuples included, on every lookup. Flows are loaded once and their objects kept,
so identity is the cheaper key; the entry holds its object, so the id cannot be reused while
the entry is there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class by_identity(Generic[K, V]):  # lower case: a decorator, like lru_cache
    """`f(obj)` worked out once per object; forgets everything past `maxsize` objects."""

    def __init__(self, fn: Callable[[K], V], maxsize: int = 4096) -> None:
        self.fn = fn
        self.maxsize = maxsize
        self.entries: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        entry = self.entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = self.fn(obj)
        if len(self.entries) >= self.maxsize:
            self.entries.clear()
        self.entries[id(obj)] = (obj, value)
        return value

    def cache_clear(self) -> None:
        self.entries.clear()
