"""Quiet hours: when the bot never pushes anything by itself (QUIET_HOURS, e.g. 21:00-09:00
Asia/Tokyo); a follow-up due then waits for the morning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError

_FORMAT: Final = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s+(\S+)\s*")


class QuietHoursError(ConfigError):
    """QUIET_HOURS cannot be read."""


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window, possibly across midnight (21:00-09:00); `None` start: no quiet hours."""

    start: time | None
    end: time | None
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """'21:00-09:00 Asia/Tokyo'; an empty string means never quiet."""
        if not text.strip():
            return cls(start=None, end=None, zone=ZoneInfo("UTC"))
        found = _FORMAT.fullmatch(text)
        if found is None:
            raise QuietHoursError(
                f"QUIET_HOURS {text!r}: expected 'HH:MM-HH:MM Zone', e.g. '21:00-09:00 Asia/Tokyo'"
            )
        h1, m1, h2, m2, zone = found.groups()
        try:
            start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
            tz = ZoneInfo(zone)
        except (ValueError, ZoneInfoNotFoundError) as error:
            raise QuietHoursError(f"QUIET_HOURS {text!r}: {error}") from None
        if start == end:
            raise QuietHoursError(f"QUIET_HOURS {text!r}: the window is empty")
        return cls(start=start, end=end, zone=tz)

    def ends(self, now: datetime) -> datetime | None:
        """When the quiet window `now` falls in ends; None when `now` is not quiet."""
        if self.start is None or self.end is None:
            return None
        local = now.astimezone(self.zone)
        moment = local.time().replace(tzinfo=None)
        if self.start < self.end:  # within one day (e.g. 12:00-13:00)
            if not self.start <= moment < self.end:
                return None
            day = local.date()
        else:  # across midnight
            if self.end <= moment < self.start:
                return None
            day = local.date() + timedelta(days=1) if moment >= self.start else local.date()
        return datetime.combine(day, self.end, tzinfo=self.zone)
