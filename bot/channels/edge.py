"""What every channel's parsing holds inbound values to: user text clipped, times in range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

MAX_TEXT: Final = 2000
"""Characters of a user's message kept (as the web chat accepts): a longer one is clipped
before it reaches the NLU or the store."""
MAX_LABEL: Final = 200
"""Characters of a button's label, choice id or question state (our buttons carry far less)."""

_EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
_AHEAD: Final = timedelta(days=1)


def clip(text: str, most: int = MAX_TEXT) -> str:
    return text[:most]


def event_time(seconds: float) -> datetime | None:
    """The moment `seconds` after the epoch names, or None when it is not a plausible time for
    an event (before 1970, more than a day ahead, infinite, NaN): the platforms are signed,
    not sane, and such a time would fail to convert or sort an event out of its place."""
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return None
    if not _EARLIEST <= moment <= datetime.now(UTC) + _AHEAD:
        return None
    return moment
