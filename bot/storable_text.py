"""Text that every store can keep: no NUL and no lone surrogates.

PostgreSQL refuses U+0000 in text, and a lone surrogate (JSON allows `"\\ud800"`) cannot be
encoded as UTF-8 at all: either one would fail the transaction it is written in. The edges
scrub what LINE and Slack send (their events must be answered anyway) and refuse it in our own
web API (422), so nothing past them meets such text.
"""

from __future__ import annotations

import json
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


def loads_storable(body: bytes) -> Any:
    """`json.loads(body)`, scrubbed (see `scrub_json`) unless its bytes cannot hold what is
    scrubbed: in UTF-8 JSON a NUL arrives only as a `\\u` escape (strings refuse raw control
    characters) and a lone surrogate only as an escape or as its encoded form (lead byte 0xED,
    which `json` decodes with 'surrogatepass'). Most webhooks have neither, and walking every
    string of them was a tenth of the cost of acknowledging one."""
    document = json.loads(body)
    if json.detect_encoding(body) == "utf-8" and b"\\u" not in body and b"\xed" not in body:
        return document
    return scrub_json(document)


def require_storable(text: str) -> str:
    """A pydantic validator: refuse (422 in FastAPI) what `scrub` would change."""
    if not is_storable(text):
        raise ValueError("text contains U+0000 or a lone surrogate")
    return text
