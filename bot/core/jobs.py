"""Periodic work of the process that runs the background jobs: the retention purge (the
outbox sweeps itself, and the handoff desk watches its own timers)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.store import SqlStore

log = logging.getLogger(__name__)

PURGE_EVERY: Final = 6 * 3600.0
"""Seconds between retention purges of conversations whose users left (RETENTION_DAYS)."""
PURGE_FIRST_AFTER: Final = 60.0
"""The first purge waits a minute, so start-up stays light but frequent restarts still purge."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsTuning:
    purge_every: float = PURGE_EVERY


class Jobs:
    def __init__(self, *, store: SqlStore, retention_days: int, tuning: JobsTuning) -> None:
        self.store = store
        self.retention_days = retention_days
        self.tuning = tuning
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        every = self.tuning.purge_every
        first = min(PURGE_FIRST_AFTER, every)
        self._tasks.append(asyncio.get_running_loop().create_task(self._every(every, first)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
