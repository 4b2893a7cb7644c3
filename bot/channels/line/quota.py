"""LINE pushes cost money: how much of the month's allowance is used, read every
QUOTA_EVERY seconds into /metrics, with a warning in the log past WARN_AT of it."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from bot.channels.line.api import LineApi, LineApiError, LineQuota
from bot.metrics import Metrics

log = logging.getLogger(__name__)

QUOTA_EVERY: Final = 900.0
"""Seconds between readings (LINE updates the consumption figure with some delay anyway)."""
WARN_AT: Final = 0.8
"""Share of the monthly allowance used past which each reading logs a warning."""


class QuotaWatch:
    """Reads LINE's quota and consumption now and then, into the metrics."""

    def __init__(
        self,
        *,
        api: LineApi,
        metrics: Metrics,
        every: float = QUOTA_EVERY,
        warn_at: float = WARN_AT,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.every = every
        self.warn_at = warn_at
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check(self) -> LineQuota:
        """One reading: into the gauges, and a warning when most of the allowance is gone."""
        quota = await self.api.quota()
        self.metrics.line_quota_used.set(quota.used)
        ratio = quota.used_ratio
        if quota.limit is None or ratio is None:
            self.metrics.line_quota_limit.set(-1)  # no monthly limit
            self.metrics.line_quota_used_ratio.set(0)
            return quota
        self.metrics.line_quota_limit.set(quota.limit)
        self.metrics.line_quota_used_ratio.set(ratio)
        if ratio > self.warn_at:
            log.warning(
                "LINE push quota %.0f%% used (%d of %d messages this month); replies stay free",
                ratio * 100,
                quota.used,
                quota.limit,
            )
        return quota

    async def _forever(self) -> None:
        while True:
            try:
                await self.check()
            except LineApiError as error:
                log.warning("LINE quota not read: %s", error)
            except Exception:
                log.exception("LINE quota not read")
            await asyncio.sleep(self.every)
