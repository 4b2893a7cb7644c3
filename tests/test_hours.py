"""AGENT_HOURS: parsing, open or not, and when agents are back; plain table tests."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from bot.booking.calendar import Closures
from bot.errors import ConfigError
from bot.handoff.hours import AgentHours, when

TOKYO = ZoneInfo("Asia/Tokyo")
DEFAULT = AgentHours.parse("Mon-Fri 09:00-18:00 Asia/Tokyo")


def tokyo(day: int, hour: int, minute: int = 0) -> datetime:
    """April 2025 in Tokyo: the 7th is a Monday, the 5th a Saturday."""
    return datetime(2025, 4, day, hour, minute, tzinfo=TOKYO)


def test_parse_the_usual_form() -> None:
    [window] = DEFAULT.windows
    assert window.days == frozenset(range(5))
    assert (window.start, window.end) == (time(9), time(18))
    assert DEFAULT.zone == TOKYO
    assert DEFAULT.describe() == "月〜金 9:00〜18:00"


def test_parse_several_windows_lists_and_wrapping_ranges() -> None:
    hours = AgentHours.parse("Mon,Wed,Fri 10:00-12:30 Sat-Sun 13:00-24:00 UTC")
    assert [sorted(w.days) for w in hours.windows] == [[0, 2, 4], [5, 6]]
    assert hours.describe() == "月・水・金 10:00〜12:30、土・日 13:00〜24:00"
    assert AgentHours.parse("Fri-Mon 09:00-10:00 UTC").windows[0].days == frozenset({4, 5, 6, 0})
    assert AgentHours.parse("").windows == () and AgentHours.parse("always").is_open(tokyo(6, 3))


@pytest.mark.parametrize(
    "text",
    [
        "Mon-Fri 09:00-18:00",  # no zone
        "Mon-Fri 09:00-18:00 Mars/Olympus",
        "Mon-Funday 09:00-18:00 UTC",
        "Mon-Fri 9-18 UTC",
        "Mon-Fri 18:00-09:00 UTC",  # ends before it starts
        "Mon-Fri 09:00-25:00 UTC",
        "Mon-Fri UTC",
    ],
)
def test_parse_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ConfigError, match="AGENT_HOURS"):
        AgentHours.parse(text)


@pytest.mark.parametrize(
    ("moment", "open_"),
    [
        (tokyo(7, 9, 0), True),  # Monday, opening minute
        (tokyo(7, 17, 59), True),
        (tokyo(7, 18, 0), False),  # closing is exclusive
        (tokyo(7, 8, 59), False),
        (tokyo(5, 12), False),  # Saturday
        (datetime(2025, 4, 7, 0, 30, tzinfo=UTC), True),  # 09:30 in Tokyo, asked in UTC
    ],
)
def test_is_open(moment: datetime, open_: bool) -> None:
    assert DEFAULT.is_open(moment) is open_


@pytest.mark.parametrize(
    ("moment", "back"),
    [
        (tokyo(7, 10), tokyo(7, 10)),  # open now: now
        (tokyo(7, 7), tokyo(7, 9)),  # before opening: today
        (tokyo(7, 19), tokyo(8, 9)),  # after closing: tomorrow
        (tokyo(4, 19), tokyo(7, 9)),  # Friday evening: Monday
        (tokyo(5, 12), tokyo(7, 9)),  # Saturday
    ],
)
def test_next_open(moment: datetime, back: datetime) -> None:
    assert DEFAULT.next_open(moment) == back


def test_when_reads_relative_to_now() -> None:
    assert when(tokyo(7, 9), tokyo(7, 7)) == "本日 9:00"
    assert when(tokyo(8, 9), tokyo(7, 19)) == "明日（4月8日・火）9:00"
    assert when(tokyo(7, 9), tokyo(5, 12)) == "4月7日（月）9:00"


# ---------------------------------------------------------------- the closure calendar


def test_a_weekday_holiday_is_closed_and_agents_are_back_the_next_working_day() -> None:
    """2025-04-29 (Tue) is 昭和の日: before the calendar, a user asking then was told agents
    answer now. Golden Week: 5/5 (Mon, こどもの日) and 5/6 (振替休日) too."""
    hours = AgentHours.parse("Mon-Fri 09:00-18:00 Asia/Tokyo", closures=Closures.parse(""))
    showa = datetime(2025, 4, 29, 10, 0, tzinfo=TOKYO)
    assert not hours.is_open(showa)
    assert hours.next_open(showa) == datetime(2025, 4, 30, 9, 0, tzinfo=TOKYO)
    golden = datetime(2025, 5, 2, 18, 30, tzinfo=TOKYO)  # Friday evening before the long weekend
    assert hours.next_open(golden) == datetime(2025, 5, 7, 9, 0, tzinfo=TOKYO)
    assert hours.is_open(datetime(2025, 4, 30, 10, 0, tzinfo=TOKYO))


def test_closed_dates_close_days_and_ranges() -> None:
    closures = Closures.parse("2025-12-29..2026-01-04, 2025-04-08", public_holidays=False)
    hours = AgentHours.parse("Mon-Fri 09:00-18:00 Asia/Tokyo", closures=closures)
    assert not hours.is_open(tokyo(8, 10))
    assert hours.next_open(tokyo(8, 10)) == tokyo(9, 9)
    year_end = datetime(2025, 12, 26, 19, 0, tzinfo=TOKYO)
    assert hours.next_open(year_end) == datetime(2026, 1, 5, 9, 0, tzinfo=TOKYO)
    assert closures.reason(tokyo(8, 0).date()) == "休業日"
    assert Closures.parse("").reason(datetime(2025, 4, 29).date()) == "昭和の日"


@pytest.mark.parametrize("text", ["2025-13-01", "2025-04-08..2025-04-01", "tomorrow"])
def test_closed_dates_refuse_what_they_cannot_read(text: str) -> None:
    with pytest.raises(ConfigError, match="CLOSED_DATES"):
        Closures.parse(text)


def test_a_user_asking_on_a_holiday_is_told_when_agents_are_back() -> None:
    from datetime import timedelta

    from bot.handoff.desk import waiting_text

    hours = AgentHours.parse("Mon-Fri 09:00-18:00 Asia/Tokyo", closures=Closures.parse(""))
    said = waiting_text(hours, timedelta(minutes=15), datetime(2025, 4, 29, 10, 0, tzinfo=TOKYO))
    assert "対応時間外" in said and "明日（4月30日・水）9:00から" in said
