"""Acknowledgements first: background work steps aside while a burst of webhooks is answered.

A webhook must answer quickly (LINE and Slack retry, and count, slow answers); the turns it
records are durable and may wait a moment. So while webhook requests come in a burst
(`BUSY_AT` or more in flight at once, within the last `HOLD` seconds: a steady stream has one
or two), the turn batcher waits before each batch, and a worker before reading more events,
but never longer than `patience`, so that a sustained flood slows the bot's answers without
stopping them.

With WORKER_MODE=separate the webhooks are served by another process: `yarigai serve` then
shares the moment of its last burst with the `yarigai worker`s it starts, through a small
memory-mapped file (`SharedMoment`), and they step aside in the same way.
"""

from __future__ import annotations

import asyncio
import mmap
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

PATIENCE: Final = 0.5
"""Seconds background work waits for a burst to pass before going ahead anyway."""
BUSY_AT: Final = 4
"""Webhook requests in flight at once that make a burst."""
HOLD: Final = 0.05
"""Seconds a burst counts as going on after the last moment it was seen: answers of a group
commit leave together, and the next requests arrive a moment later."""
LOOK_EVERY: Final = 0.005
"""Seconds between looks while waiting for a burst to pass."""

_BOARD: Final = struct.Struct("=id")  # requests in flight, last moment of a burst


class SharedMoment:
    """A count of requests in flight and the last `time.monotonic()` moment they made a burst,
    in a memory-mapped file: written by one process, read by others on the same machine (the
    monotonic clock is the system's). A torn read only shifts a heuristic's timing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), _BOARD.size)

    @classmethod
    def create(cls, path: Path) -> SharedMoment:
        path.write_bytes(_BOARD.pack(0, 0.0))
        return cls(path)

    def get(self) -> tuple[int, float]:
        """(requests in flight, last moment of a burst)."""
        in_flight, moment = _BOARD.unpack_from(self._map)
        return int(in_flight), float(moment)

    def set(self, in_flight: int, moment: float) -> None:
        _BOARD.pack_into(self._map, 0, in_flight, moment)


class Foreground:
    """Tells whether a burst of foreground work is going on; `step_aside` waits it out.

    `publish`: also share the moment of each burst there (a web server whose turns other
    processes run); `watch`: also heed the bursts shared there (those processes)."""

    def __init__(
        self,
        *,
        patience: float = PATIENCE,
        busy_at: int = BUSY_AT,
        publish: SharedMoment | None = None,
        watch: SharedMoment | None = None,
    ) -> None:
        self.patience = patience
        self.busy_at = busy_at
        self._publish = publish
        self._watch = watch
        self._in_flight = 0
        self._last_burst = 0.0

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around a piece of foreground work (one webhook request)."""
        self._moved(+1)
        try:
            yield
        finally:
            self._moved(-1)

    def _moved(self, change: int) -> None:
        if self._in_flight >= self.busy_at or self._in_flight + change >= self.busy_at:
            self._last_burst = time.monotonic()
        self._in_flight += change
        if self._publish is not None:
            self._publish.set(self._in_flight, self._last_burst)

    @property
    def busy(self) -> bool:
        """A burst is going on (or was, a moment ago), here or in the watched process."""
        in_flight, last = self._in_flight, self._last_burst
        if self._watch is not None:
            watched, moment = self._watch.get()
            in_flight, last = max(in_flight, watched), max(last, moment)
        return in_flight >= self.busy_at or time.monotonic() - last < HOLD

    async def step_aside(self) -> None:
        """Return once no burst is going on, or after `patience` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        # The moment may be another process's: no event to wait on, so look every few ms.
        while self.busy and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(LOOK_EVERY)
