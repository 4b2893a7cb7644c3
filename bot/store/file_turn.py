"""Turns at one SQLite file across processes: a web server and its workers queue for it.

SQLite lets one transaction write at a time and makes the others retry on a timer: its busy
handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries, so two processes writing often
(the web server recording events, a worker saving turns) lose milliseconds to sleeping while
the file is already free. An exclusive `flock` on a side file makes the wait a queue instead:
the kernel wakes the waiter the moment the holder lets go. Within a process the engine's one
connection already makes callers queue, so the turn is per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine

from bot.errors import StoreError

PATIENCE: Final = 5.0
"""Seconds to wait for the file (SQLite's own busy_timeout is the same): then 'locked'."""
CHECKPOINT_AT: Final = 4 * 1024 * 1024
"""Bytes of WAL after which a checkpoint is started (SQLite's own default: 1,000 pages)."""
WAL_KEPT: Final = 1024 * 1024
"""Bytes the WAL is cut back to once checkpointed (`PRAGMA journal_size_limit`)."""

log = logging.getLogger(__name__)

_turns: WeakKeyDictionary[Engine, FileTurn] = WeakKeyDictionary()


class FileTurn:
    """An exclusive lock on `<database>-turn`, taken around each transaction."""

    def __init__(self, database: str, *, patience: float = PATIENCE) -> None:
        self.path = f"{database}-turn"
        self.database = database
        self.patience = patience
        self._wal = f"{database}-wal"
        self._checkpointing: asyncio.Task[None] | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self.take()
        try:
            yield
        finally:
            self.give_back()

    async def take(self) -> None:
        """Wait for the file (`patience` seconds at most, then StoreError)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no thread needed
            return
        except BlockingIOError:
            pass
        # Held by another process: wait for it in a thread, so the event loop goes on.
        waiting = asyncio.get_running_loop().run_in_executor(
            None, fcntl.flock, self._fd, fcntl.LOCK_EX
        )
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self.patience)
        except BaseException as error:
            # Cancelled or out of patience: the thread may still get the lock; let it go then.
            waiting.add_done_callback(self._let_go)
            if isinstance(error, TimeoutError):
                raise StoreError("database is locked (another process kept it)") from error
            raise

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._checkpoint_when_grown()

    def _checkpoint_when_grown(self) -> None:
        if self._checkpointing is not None:
            return
        try:
            grown = os.stat(self._wal).st_size >= CHECKPOINT_AT
        except OSError:
            return
        if grown:
            loop = asyncio.get_running_loop()
            self._checkpointing = loop.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting for anyone, on a connection of its own
        and in a thread (the file I/O lets go of the GIL), so no writer or reader waits."""
        try:
            await asyncio.to_thread(_checkpoint, self.database)
        except sqlite3.Error as error:
            log.info("WAL checkpoint skipped (%s)", error)
        finally:
            self._checkpointing = None

    def _let_go(self, waiting: asyncio.Future[None]) -> None:
        if not waiting.cancelled() and waiting.exception() is None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def _checkpoint(database: str) -> None:
    connection = sqlite3.connect(database, timeout=PATIENCE)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        connection.close()


def share_file(engine: Engine, database: str) -> None:
    """Make the transactions of `engine` take turns at `database` with other processes."""
    _turns[engine] = FileTurn(database)


def turn_of(engine: Engine) -> FileTurn | None:
    return _turns.get(engine)
