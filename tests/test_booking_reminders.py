"""REMINDER_BEFORE_HOURS as the wiring reads it (the reminders themselves are tested end to
end in tests/test_booking_web.py, _line.py and _slack.py with a fake clock)."""

from __future__ import annotations

import pytest

from bot.core.booking_reminders import parse_before
from bot.errors import ConfigError


def test_reminder_hours_are_read_latest_first_without_repeats() -> None:
    assert parse_before("1, 24") == (24, 1)
    assert parse_before("24,24,1") == (24, 1)
    assert parse_before("") == ()


@pytest.mark.parametrize("text", ["tomorrow", "0", "-1", "24,x", "400"])
def test_reminder_hours_refuse_what_they_cannot_use(text: str) -> None:
    with pytest.raises(ConfigError, match="REMINDER_BEFORE_HOURS"):
        parse_before(text)
