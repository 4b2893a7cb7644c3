"""Text that every store can keep: no NUL and no lone surrogates.

PostgreSQL refuses U+0000 in text, and a lone surrogate (JSON allows `"\\ud800"`) cannot be
encoded as UTF-8 at all: either one would fail the transaction it is written in. The edges
scrub what LINE and Slack send (their events must be answered anyway) and refuse it in our own
web API (422), so nothing past them meets such text.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def scrub(text: str) -> str:
    """`text` without NUL and lone surrogates (a valid pair is already one character here)."""
    return _UNSTORABLE.sub("", text)


def scrub_json(value: Any) -> Any:
    """A parsed JSON document with every string, keys included, scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(key): scrub_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_json(item) for item in value]
    return value


def require_storable(text: str) -> str:
    """A pydantic validator: refuse (422 in FastAPI) what `scrub` would change."""
    if not is_storable(text):
        raise ValueError("text contains U+0000 or a lone surrogate")
    return text
