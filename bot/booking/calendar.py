"""Days nobody works: Japanese public holidays (the `holidays` library) and the agency's own
closure dates (CLOSED_DATES). One calendar drives both booking slots and AGENT_HOURS."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

import holidays

from bot.errors import ConfigError

_MAX_RANGE: Final = 366  # days in one CLOSED_DATES range: a typo should not close a decade


@dataclass(frozen=True)
class Closures:
    """Whether a day is closed, and why (a holiday's name, or 休業日)."""

    closed_dates: frozenset[date] = frozenset()
    public_holidays: bool = True
    _cache: dict[int, holidays.HolidayBase] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, text: str, *, public_holidays: bool = True) -> Closures:
        """`2026-12-29..2027-01-03,2027-05-06`: days and inclusive ranges, comma-separated."""
        days: set[date] = set()
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, _, last = part.partition("..")
            try:
                start = date.fromisoformat(first.strip())
                end = date.fromisoformat(last.strip()) if last else start
            except ValueError as error:
                raise ConfigError(
                    f"CLOSED_DATES {part!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
                ) from error
            if end < start or (end - start).days > _MAX_RANGE:
                raise ConfigError(f"CLOSED_DATES {part!r}: the range runs backwards or too long")
            days.update(start + timedelta(days=n) for n in range((end - start).days + 1))
        return cls(closed_dates=frozenset(days), public_holidays=public_holidays)

    def is_closed(self, day: date) -> bool:
        return self.reason(day) is not None

    def reason(self, day: date) -> str | None:
        if day in self.closed_dates:
            return "休業日"
        if self.public_holidays:
            return self._holidays(day.year).get(day)
        return None

    def _holidays(self, year: int) -> holidays.HolidayBase:
        # Per year, built once: the library computes equinoxes and substitute holidays.
        known = self._cache.get(year)
        if known is None:
            known = self._cache[year] = holidays.country_holidays("JP", years=year, language="ja")
        return known


NO_CLOSURES: Final = Closures(public_holidays=False)
"""A calendar where every day is a working day (tests of hours alone, `AGENT_HOURS=always`)."""
