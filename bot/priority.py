"""Acknowledgements first: background work steps aside while webhook requests are in flight.

A webhook must answer quickly (LINE and Slack retry, and count, slow answers); the turns it
records are durable and may wait a moment. So the turn batcher, before each batch, waits for
a moment with no webhook request in flight, but never longer than `patience`, so that a
sustained flood slows the bot's answers without stopping them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Final

PATIENCE: Final = 0.5
"""Seconds background work waits for the webhooks to fall quiet before going ahead anyway."""


class Foreground:
    """Counts foreground work in flight; `step_aside` waits for none (or for `patience`)."""

    def __init__(self, *, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around a piece of foreground work (one webhook request)."""
        self._in_flight += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()

    async def step_aside(self) -> None:
        """Return once no foreground work is in flight, or after `patience` seconds."""
        if self._in_flight:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.patience)
