"""The console's live feed: an `AgentSurface` that wakes the open event streams.

It carries no data: each stream re-reads the queue and the transcript from the store when
woken (and every few seconds anyway). So the store stays the one truth, and a move made by
another server process still shows, only a little later.
"""

from __future__ import annotations

import asyncio
import contextlib

from bot.core.ports import AgentRef
from bot.models import StoredMessage
from bot.store import Handoff


class ConsoleFeed:
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.closed = False

    def moment(self) -> asyncio.Event:
        """Take before reading the store, then `wait` on it: no change can slip in between."""
        return self._changed

    async def wait(self, moment: asyncio.Event, seconds: float) -> None:
        """Until `moment` passes (a change) or `seconds` pass, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(moment.wait(), seconds)

    def pulse(self) -> None:
        """Wake every stream waiting now; later waiters wait for the next change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        self.closed = True
        self.pulse()

    # ------------------------------------------------------------ AgentSurface

    async def notify_new(self, handoff: Handoff) -> None:
        self.pulse()

    async def user_message(self, handoff: Handoff, text: str) -> None:
        self.pulse()

    async def agent_message(
        self, handoff: Handoff, message: StoredMessage, agent: AgentRef
    ) -> None:
        self.pulse()

    async def claimed(self, handoff: Handoff, agent: AgentRef) -> None:
        self.pulse()

    async def released(self, handoff: Handoff) -> None:
        self.pulse()

    async def cancelled(self, handoff: Handoff) -> None:
        self.pulse()
