"""Saved replies' variables: unknown ones are found before saving, known ones filled in."""

from __future__ import annotations

import pytest

from bot.handoff.canned import fill, unknown_variables


@pytest.mark.parametrize(
    ("body", "unknown"),
    [
        ("担当の{{name}}です。{{ role }}のお仕事、{{agency}}", []),
        ("{{ user }}さん、{{name}}です", ["user"]),
        ("{{ role | upper }}", ["role | upper"]),  # no template language: only the names
        ("{% if role %}x{% endif %}", []),  # said as is, never run
        ("{{name}", ["{{ または }} の対応"]),
    ],
)
def test_unknown_variables(body: str, unknown: list[str]) -> None:
    assert unknown_variables(body) == unknown


def test_fill_replaces_and_names_what_had_no_value() -> None:
    text, missing = fill("{{name}}です。{{ role }}ですね。", {"name": "花子", "role": ""})
    assert (text, missing) == ("花子です。ですね。", ["role"])
