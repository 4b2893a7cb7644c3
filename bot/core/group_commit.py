"""Group commit: callers arriving together share one write, each still awaiting its own answer.

The first caller opens a batch and schedules its flush for the next turn of the event loop;
whoever calls before that rides along. While a batch is being written, new callers gather into
the next one, so under load the write in flight is the window, and when idle a lone caller
waits one loop turn at most. A caller gets its answer only after the whole batch is written
(committed), never before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")

MAX_BATCH: Final = 500
"""Items per write at most; more wait for the next one."""


class GroupCommit(Generic[Item, Answer]):
    """Batches `submit` calls into calls of `write(items) -> answers` (one answer per item)."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """`item`'s answer, once the batch it joined is written; the write's error otherwise."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None:
            # Kept in an attribute, so the task is neither lost nor garbage-collected.
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let callers of this loop turn join
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write_batch(batch)
        finally:
            self._flusher = None
            # Only when cancelled (shutdown): nobody will write these, so nobody may wait.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._write([item for item, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # every caller of the batch gets the same error
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # a caller that gave up (client gone) is skipped
                future.set_result(answer)
