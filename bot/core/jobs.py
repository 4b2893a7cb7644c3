"""Periodic work of the process that runs the background jobs: durable timers (follow-ups,
reminders; bot/core/timers.py), the retention purge and the marking of abandoned conversations
for analytics (the outbox sweeps itself, and the handoff desk watches its own waits)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.core.timers import TimerRunner
from bot.store import SqlStore

log = logging.getLogger(__name__)

PURGE_EVERY: Final = 6 * 3600.0
"""Seconds between retention purges of conversations whose users left (RETENTION_DAYS)."""
PURGE_FIRST_AFTER: Final = 60.0
"""The first purge waits a minute, so start-up stays light but frequent restarts still purge."""
TIMERS_EVERY: Final = 5.0
"""Seconds at most between looks for due timers (sooner when one is due sooner): a timer
another process schedules is found within this."""


ABANDON_EVERY: Final = 600.0
"""Seconds between looks for conversations left without a message ABANDON_AFTER_HOURS."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsTuning:
    purge_every: float = PURGE_EVERY
    timers_every: float = TIMERS_EVERY
    abandon_every: float = ABANDON_EVERY


class Jobs:
    def __init__(
        self,
        *,
        store: SqlStore,
        retention_days: int,
        tuning: JobsTuning,
        timers: TimerRunner | None = None,
        abandon_after_hours: float = 24.0,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.abandon_after_hours = abandon_after_hours
        self.tuning = tuning
        self.timers = timers
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        every = self.tuning.purge_every
        first = min(PURGE_FIRST_AFTER, every)
        self._tasks.append(loop.create_task(self._every(every, first)))
        if self.timers is not None:
            self._tasks.append(loop.create_task(self._timers_forever(self.timers)))
        abandon = self.tuning.abandon_every
        self._tasks.append(loop.create_task(self._abandon_every(abandon, min(abandon, 60.0))))

    async def mark_abandoned(self) -> int:
        """Record each run left without a message for ABANDON_AFTER_HOURS as abandoned where
        it stopped (once per run; it may still come back and go on)."""
        idle_since = datetime.now(UTC) - timedelta(hours=self.abandon_after_hours)
        marked = await self.store.mark_abandoned(idle_since=idle_since)
        if marked:
            log.info("%d conversations marked abandoned", marked)
        return marked

    async def _abandon_every(self, seconds: float, first: float) -> None:
        await asyncio.sleep(first)
        while True:
            try:
                await self.mark_abandoned()
            except Exception:
                log.exception("marking abandoned conversations failed; next try in %.0fs", seconds)
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def purge(self) -> None:
        days = self.retention_days
        purged = await self.store.purge_inactive(datetime.now(UTC) - timedelta(days=days))
        if purged:
            log.info("deleted %d conversations idle or left over %d days", purged, days)

    async def _every(self, seconds: float, first: float) -> None:
        await asyncio.sleep(first)
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("retention purge failed; next try in %.0fs", seconds)
            await asyncio.sleep(seconds)

    async def _timers_forever(self, timers: TimerRunner) -> None:
        most = self.tuning.timers_every
        while True:
            pause = most
            try:
                await timers.run_due()
                pause = await timers.pause(most)
            except Exception:
                log.exception("running due timers failed; next look in %.0fs", most)
            await asyncio.sleep(pause)
