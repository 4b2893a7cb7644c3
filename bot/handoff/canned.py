"""Saved replies' variables: which there are, checking a reply for unknown ones when an admin
saves it, and filling them in for one request. Plain substitution, no template language: a
saved reply can say nothing but its text and these values. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

VARIABLES: Final = {
    "name": "担当者の名前（ユーザーに見える名前）",
    "role": "ユーザーの職種（答えていなければ空）",
    "agency": "事業者名（AGENCY_NAME）",
}
"""What a saved reply may use, as `{{name}}`, and what each is (shown to admins)."""
NAME_PATTERN: Final = r"^[^\s!/{}]{1,32}$"
"""A saved reply's keyword: one word (Slack: `!keyword` in a request's thread)."""
MAX_BODY: Final = 2000  # what an agent's message may be

_VARIABLE: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def unknown_variables(body: str) -> list[str]:
    """The `{{…}}` in `body` that are not variables (an admin is told before saving)."""
    unknown = []
    for match in _VARIABLE.finditer(body):
        if match.group(1) not in VARIABLES and match.group(1) not in unknown:
            unknown.append(match.group(1))
    if not unknown and ("{{" in _VARIABLE.sub("", body) or "}}" in _VARIABLE.sub("", body)):
        unknown.append("{{ または }} の対応")
    return unknown


def fill(body: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """`body` with its variables replaced, and the variables that had no value (left empty)."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = values.get(name, "")
        if not found and name not in missing:
            missing.append(name)
        return found

    return _VARIABLE.sub(value, body), missing
