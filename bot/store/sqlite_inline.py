"""SQLite for the async engine without a thread hop per call: statements run on the caller's
thread, long scans in a worker thread.

SQLAlchemy's aiosqlite adapter sends every cursor call (open, execute, fetch, close) and every
commit through aiosqlite's own thread: about 0.1 ms each, four per statement, so one small
transaction took 1.4 ms where SQLite itself needs 0.03 ms, and a worker's batch of turns held
the file's write lock for milliseconds while others waited. A statement of a short transaction
is over before a hop would be, so here it simply runs. What could take long runs in a thread
as before (`offloading`): reports over many rows, so the event loop keeps answering webhooks.

Waiting for the write lock never happens on the loop: every writer of ours takes its turn at
the file first (`file_turn`), and a reader in WAL mode does not wait for writers.

The object given to SQLAlchemy is what its aiosqlite adapter expects of an aiosqlite
connection (`async_creator`): the adapter, its error mapping and the pysqlite dialect stay
SQLAlchemy's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


class InlineCursor:
    """aiosqlite's Cursor interface over a sqlite3 cursor."""

    def __init__(self, connection: InlineConnection) -> None:
        self._owner = connection
        self._cursor = connection._conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return await self._owner.run(self._cursor.execute, sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Any:
        return await self._owner.run(self._cursor.executemany, sql, parameters)

    async def fetchall(self) -> list[Any]:
        rows: list[Any] = await self._owner.run(self._cursor.fetchall)
        return rows

    async def fetchone(self) -> Any:
        return await self._owner.run(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        rows: list[Any] = await self._owner.run(self._cursor.fetchmany, size or self.arraysize)
        return rows

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _Now:
    """The adapter's isolation-level setter queues a function for aiosqlite's thread: run it."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)


class InlineConnection:
    """aiosqlite's Connection interface over a sqlite3 connection, run on the calling thread
    unless `offloading`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection = connection  # the adapter checks it is open before commit/rollback
        self._tx = _Now(connection)
        self.offloading = False  # set for a transaction that may take long

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.offloading:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection, for a statement run without SQLAlchemy (`sqlite_rows`)."""
        return self._conn

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        cursor = InlineCursor(self)
        await cursor.execute(sql, parameters)
        return cursor

    async def commit(self) -> None:
        await self.run(self._conn.commit)

    async def rollback(self) -> None:
        await self.run(self._conn.rollback)

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


def creator(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Callable[[], Any]:
    """SQLAlchemy's `async_creator`: connects with the arguments the dialect made of the URL."""

    async def connect() -> InlineConnection:
        # Used from the loop's thread and, for long scans, from worker threads: one at a time
        # (the pool hands the connection to one caller), so the thread check is not needed.
        return InlineConnection(sqlite3.connect(*args, **{**kwargs, "check_same_thread": False}))

    return connect
