"""What this process holds, by lease in the database: the conversations whose events it runs
(and whose replies it delivers), and the background jobs it runs for everyone.

Several workers on several hosts share one database without shard numbers: a worker takes a
conversation's lease before running its events, renews it every LEASE_SECONDS / 3 while it has
any use for it, and gives it up when done. A worker that dies stops renewing, and its
conversations pass to the others once their leases expire. A lease lost while its holder is
merely slow cannot make an event run twice: the inbox mark decides that (`bot.store.inbox`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from bot.errors import StoreError
from bot.models import Channel
from bot.store import SqlStore

log = logging.getLogger(__name__)

LEASE_SECONDS: Final = 10.0
"""How long a lease lasts unless renewed: a dead worker's conversations wait at most this."""
LINGER_SECONDS: Final = 1.0
"""How long a lease nobody here uses any more is kept before it is given back: a user's next
message within it needs no database call, and the leases given back meanwhile go in one."""


def conversation_lease(channel: Channel | str, address: str) -> str:
    return f"conversation:{Channel(channel).value}:{address}"


def job_lease(name: str) -> str:
    return f"job:{name}"


class LeaseKeeper:
    """Takes, renews and gives back this process's leases. Uses are counted: the inbox and the
    outbox may both need a conversation, and it is given back when neither does."""

    def __init__(
        self,
        *,
        store: SqlStore,
        ttl: float = LEASE_SECONDS,
        linger: float = LINGER_SECONDS,
        on_lost: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.on_lost = on_lost
        self.linger = linger
        self._uses: Counter[str] = Counter()
        self._letting_go: set[str] = set()  # held in the database, used by nobody here
        self._giving_back: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # One database call at a time: a give-back is never overtaken by a later take.
        self._calls = asyncio.Lock()
        self._renewing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        if self._giving_back is not None:
            self._giving_back.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        held = [*self._uses, *self._letting_go]
        self._uses.clear()
        self._letting_go.clear()
        if held:
            try:
                async with self._calls:
                    await self.store.release(held, holder=self.holder)
            except StoreError as exc:  # they expire by themselves
                log.warning("leases not given back at shutdown (%s)", type(exc).__name__)

    def holds(self, name: str) -> bool:
        return self._uses[name] > 0

    async def acquire(self, names: Iterable[str]) -> set[str]:
        """One more use of each name this process holds or can take now; the names granted."""
        wanted = set(names)
        held = {name for name in wanted if self._uses[name] > 0 or name in self._letting_go}
        self._letting_go -= held
        new = wanted - held
        if new:
            async with self._calls:
                new = await self.store.take(sorted(new), holder=self.holder, ttl=self.ttl)
        granted = held | new
        for name in granted:
            self._uses[name] += 1
        return granted

    async def release(self, names: Iterable[str]) -> None:
        """One use less of each; a name no longer used is given back after `linger` seconds,
        unless used again meanwhile."""
        for name in names:
            if self._uses[name] <= 0:
                continue
            self._uses[name] -= 1
            if self._uses[name] == 0:
                del self._uses[name]
                self._letting_go.add(name)
        if self._letting_go and self._giving_back is None:
            loop = asyncio.get_running_loop()
            self._giving_back = loop.call_later(self.linger, self._give_back_later)

    def _give_back_later(self) -> None:
        self._giving_back = None
        task = asyncio.get_running_loop().create_task(self._give_back())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self) -> None:
        try:
            async with self._calls:
                # Used again meanwhile (a new event came): `acquire` took those out.
                free = sorted(self._letting_go)
                self._letting_go.clear()
                if free:
                    await self.store.release(free, holder=self.holder)
        except StoreError as exc:  # they expire by themselves
            log.info("leases not given back (%s); they expire", type(exc).__name__)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                async with self._calls:
                    held = sorted(self._uses)  # under the lock: nothing given back meanwhile
                    if not held:
                        continue
                    kept = await self.store.take(held, holder=self.holder, ttl=self.ttl)
            except StoreError as exc:
                # The database is away: the leases may lapse; when it is back, whatever lapsed
                # and was taken by another process shows as lost at the next renewal.
                log.warning("leases not renewed (%s)", type(exc).__name__)
                continue
            lost = {name for name in held if name not in kept and self._uses[name] > 0}
            if lost:
                log.warning("%d leases passed to other processes", len(lost))
                for name in lost:
                    del self._uses[name]
                if self.on_lost is not None:
                    self.on_lost(lost)
