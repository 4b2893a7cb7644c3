"""When agents answer: AGENT_HOURS such as `Mon-Fri 09:00-18:00 Asia/Tokyo`, parsed once,
minus the days the closure calendar closes (public holidays, CLOSED_DATES).

Pure: every question takes the time as an argument, so tests use any clock they like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.booking.calendar import NO_CLOSURES, Closures
from bot.errors import ConfigError

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS: Final = ("月", "火", "水", "木", "金", "土", "日")
ALWAYS: Final = frozenset({"", "always", "24/7"})
_SPAN: Final = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_LOOKAHEAD_DAYS: Final = (
    400  # closures (a long holiday, CLOSED_DATES) may push the next opening far
)


@dataclass(frozen=True, slots=True)
class Window:
    """Agents answer on `days` (0 = Monday) from `start` to `end` local time."""

    days: frozenset[int]
    start: time
    end: time  # time(0) as an end means midnight (24:00)

    def contains(self, local: datetime) -> bool:
        if local.weekday() not in self.days:
            return False
        moment = local.time().replace(tzinfo=None)
        return self.start <= moment and (self.end == time(0) or moment < self.end)


@dataclass(frozen=True, slots=True)
class AgentHours:
    windows: tuple[Window, ...]  # empty: always open
    zone: ZoneInfo
    closures: Closures = NO_CLOSURES  # days agents do not work whatever the windows say

    @classmethod
    def parse(cls, text: str, *, closures: Closures = NO_CLOSURES) -> AgentHours:
        """`Mon-Fri 09:00-18:00 Asia/Tokyo`; several windows may precede the zone
        (`Mon-Fri 09:00-18:00 Sat 10:00-13:00 Asia/Tokyo`); days as ranges or lists
        (`Mon,Wed,Fri`). Empty or `always` means agents always answer."""
        words = text.split()
        if text.strip().lower() in ALWAYS:
            return cls(windows=(), zone=ZoneInfo("UTC"))  # 24/7 means holidays too
        if len(words) < 3 or len(words) % 2 == 0:
            raise ConfigError(
                f"AGENT_HOURS {text!r}: expected e.g. 'Mon-Fri 09:00-18:00 Asia/Tokyo'"
            )
        try:
            zone = ZoneInfo(words[-1])
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"AGENT_HOURS {text!r}: unknown time zone {words[-1]!r}") from error
        windows = tuple(
            _window(days, span, text)
            for days, span in zip(words[:-1:2], words[1:-1:2], strict=True)
        )
        return cls(windows=windows, zone=zone, closures=closures)

    def is_open(self, now: datetime) -> bool:
        if not self.windows:
            return True
        local = now.astimezone(self.zone)
        if self.closures.is_closed(local.date()):
            return False
        return any(w.contains(local) for w in self.windows)

    def next_open(self, now: datetime) -> datetime:
        """`now` if agents answer now, else when they next start (in the agents' zone)."""
        local = now.astimezone(self.zone)
        if self.is_open(now):
            return local
        for ahead in range(_LOOKAHEAD_DAYS):
            day = local.date() + timedelta(days=ahead)
            if self.closures.is_closed(day):
                continue
            starts = [
                datetime.combine(day, w.start, tzinfo=self.zone)
                for w in self.windows
                if day.weekday() in w.days
            ]
            later = [s for s in starts if s > local]
            if later:
                return min(later)
        raise ConfigError(f"AGENT_HOURS opens on no day in the next {_LOOKAHEAD_DAYS} days")

    def describe(self) -> str:
        """How the hours read to a user: 「月〜金 9:00〜18:00」."""
        if not self.windows:
            return "24時間"
        return "、".join(
            f"{_days_label(w.days)} {_clock(w.start)}〜{_clock(w.end, end=True)}"
            for w in self.windows
        )


def when(moment: datetime, now: datetime) -> str:
    """A local moment as a user reads it relative to now: 「本日 9:00」「明日（4月2日・水）9:00」."""
    local_now = now.astimezone(moment.tzinfo)
    days = (moment.date() - local_now.date()).days
    clock = _clock(moment.time())
    if days == 0:
        return f"本日 {clock}"
    date = f"{moment.month}月{moment.day}日・{DAY_LABELS[moment.weekday()]}"
    if days == 1:
        return f"明日（{date}）{clock}"
    return f"{moment.month}月{moment.day}日（{DAY_LABELS[moment.weekday()]}）{clock}"


def short_when(moment: datetime, now: datetime) -> str:
    """A local moment in a status line: 「本日9:00」「明日9:00」「月曜9:00」 (within a week)."""
    local_now = now.astimezone(moment.tzinfo)
    days = (moment.date() - local_now.date()).days
    clock = _clock(moment.time())
    if days == 0:
        return f"本日{clock}"
    if days == 1:
        return f"明日{clock}"
    return f"{DAY_LABELS[moment.weekday()]}曜{clock}"


def _window(days: str, span: str, text: str) -> Window:
    matched = _SPAN.fullmatch(span)
    if matched is None:
        raise ConfigError(f"AGENT_HOURS {text!r}: {span!r} is not like 09:00-18:00")
    h1, m1, h2, m2 = (int(g) for g in matched.groups())
    if h2 == 24 and m2 == 0:
        h2 = 0  # 24:00: until midnight
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError as error:
        raise ConfigError(f"AGENT_HOURS {text!r}: {span!r} is not a time of day") from error
    if end != time(0) and end <= start:
        raise ConfigError(f"AGENT_HOURS {text!r}: {span!r} ends before it starts")
    return Window(days=_days(days, text), start=start, end=end)


def _days(spec: str, text: str) -> frozenset[int]:
    picked: set[int] = set()
    for part in spec.lower().split(","):
        first, _, last = part.partition("-")
        if first[:3] not in DAYS or (last and last[:3] not in DAYS):
            raise ConfigError(f"AGENT_HOURS {text!r}: {part!r} is not a day like Mon or Mon-Fri")
        a = DAYS.index(first[:3])
        b = DAYS.index(last[:3]) if last else a
        picked.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(picked)


def _days_label(days: frozenset[int]) -> str:
    ordered = sorted(days)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{DAY_LABELS[ordered[0]]}〜{DAY_LABELS[ordered[-1]]}"
    return "・".join(DAY_LABELS[d] for d in ordered)


def _clock(moment: time, *, end: bool = False) -> str:
    if end and moment == time(0):
        return "24:00"
    return f"{moment.hour}:{moment.minute:02d}"
