"""Acknowledgements first: background work steps aside while webhook requests are in flight.

A webhook must answer quickly (LINE and Slack retry, and count, slow answers); the turns it
records are durable and may wait a moment. So while a burst of webhook requests is in flight
(`BUSY_AT` or more at once: a steady stream has one or two), the turn batcher waits before
each batch, and a worker before reading more events, but never longer than `patience`, so
that a sustained flood slows the bot's answers without stopping them.

With WORKER_MODE=separate the webhooks are served by another process: `yarigai serve` then
shares its count of requests in flight with the `yarigai worker` it starts, through a small
memory-mapped file (`SharedCount`), and the worker steps aside in the same way.
"""

from __future__ import annotations

import asyncio
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

PATIENCE: Final = 0.5
"""Seconds background work waits for the webhooks to fall quiet before going ahead anyway."""
BUSY_AT: Final = 4
"""Webhook requests in flight at once that make a burst."""
LOOK_EVERY: Final = 0.001
"""Seconds between looks at the count while waiting for the burst to pass."""

_COUNT: Final = struct.Struct("=i")


class SharedCount:
    """One integer in a memory-mapped file: written by one process, read by another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), _COUNT.size)

    @classmethod
    def create(cls, path: Path) -> SharedCount:
        path.write_bytes(b"\0" * _COUNT.size)
        return cls(path)

    def get(self) -> int:
        value: int = _COUNT.unpack_from(self._map)[0]
        return value

    def set(self, value: int) -> None:
        _COUNT.pack_into(self._map, 0, value)

    def close(self) -> None:
        self._map.close()


class Foreground:
    """Counts foreground work in flight; `step_aside` waits for none (or for `patience`).

    `publish`: also write the count there (a web server whose turns another process runs);
    `watch`: also wait for the count there (that other process)."""

    def __init__(
        self,
        *,
        patience: float = PATIENCE,
        busy_at: int = BUSY_AT,
        publish: SharedCount | None = None,
        watch: SharedCount | None = None,
    ) -> None:
        self.patience = patience
        self.busy_at = busy_at
        self._publish = publish
        self._watch = watch
        self._in_flight = 0

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around a piece of foreground work (one webhook request)."""
        self._in_flight += 1
        if self._publish is not None:
            self._publish.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._publish is not None:
                self._publish.set(self._in_flight)

    @property
    def busy(self) -> bool:
        """A burst of foreground work is in flight, here or in the watched process."""
        watched = self._watch.get() if self._watch is not None else 0
        return max(self._in_flight, watched) >= self.busy_at

    async def step_aside(self) -> None:
        """Return once no burst is in flight, or after `patience` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        # The count may be another process's: no event to wait on, so look every millisecond.
        while self.busy and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(LOOK_EVERY)
