"""Transaction helpers shared by the store's modules."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from bot.errors import BotError, StoreError
from bot.store.file_turn import FileTurn, turn_of
from bot.store.sqlite_inline import InlineConnection
from bot.tracing import span

Statement = TypeVar("Statement")
Result = TypeVar("Result")

IN_LIST: Final = 500
"""Values in one IN (...): well under SQLite's and asyncpg's bound-parameter limits."""


@asynccontextmanager
async def begin(
    engine: AsyncEngine, *, reading: bool = False, scanning: bool = False
) -> AsyncIterator[AsyncConnection]:
    """One transaction; database failures come out as StoreError, our own errors unchanged.

    A SQLite file shared by several processes is written in turns (`file_turn`); `reading`:
    this transaction only reads, and needs no turn (WAL lets it read beside a writer).
    `scanning`: it reads and may take long (a report over many rows): on SQLite its statements
    run in a thread (`sqlite_inline`), so the event loop goes on meanwhile."""
    turn = None if reading or scanning else turn_of(engine.sync_engine)
    with _as_store_errors(), span("store"):
        if turn is None and not scanning:
            async with engine.begin() as connection:
                yield connection
            return
        # The connection first, then the turn: the one connection of this process is what
        # its own callers queue for, and the turn is held only while it is used.
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            inline = driver if scanning and isinstance(driver, InlineConnection) else None
            if inline is not None:
                inline.offloading = True
            try:
                async with AsyncExitStack() as held:
                    if turn is not None:
                        await held.enter_async_context(turn.held())
                    async with connection.begin():
                        yield connection
            finally:
                if inline is not None:
                    inline.offloading = False


async def in_one_go(engine: AsyncEngine, work: Callable[[sa.Connection], Result]) -> Result:
    """`work(connection)` as one transaction (like `begin`), run whole on one greenlet.

    Each awaited step of an `AsyncConnection` (connect, begin, every statement, commit, close)
    is run by SQLAlchemy on a greenlet of its own, and a new greenlet costs Python an mmap and
    a munmap of frame memory besides SQLAlchemy's own layers: a one-row transaction took
    0.33 ms of CPU that way and 0.07 ms in one go. For the hottest transactions (the
    webhook's recording), written as plain functions of a synchronous connection."""
    with _as_store_errors(), span("store"):
        return await greenlet_spawn(
            _transaction, engine.sync_engine, turn_of(engine.sync_engine), work
        )


def _transaction(
    engine: sa.Engine, turn: FileTurn | None, work: Callable[[sa.Connection], Result]
) -> Result:
    with engine.connect() as connection:
        if turn is not None:
            await_only(turn.take())  # after the connection, as in `begin`
        try:
            with connection.begin():
                return work(connection)
        finally:
            if turn is not None:
                turn.give_back()


@contextmanager
def _as_store_errors() -> Iterator[None]:
    """Database failures come out as StoreError, our own errors unchanged."""
    try:
        yield
    except BotError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError) as error:
        # Engines hide bound parameters, so this message carries no user text (nor does
        # sqlite3's own, from statements run on the driver: `sqlite_rows`).
        raise StoreError(f"{type(error).__name__}: {error}") from error


def insert(connection: AsyncConnection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT that can say ON CONFLICT, on either backend."""
    return insert_for(connection.dialect.name, table)


def insert_for(dialect: str, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    if dialect == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


def built_once(
    build: Callable[[str], Statement],
) -> Callable[[AsyncConnection | sa.Connection], Statement]:
    """A statement built once per database dialect, then reused. SQLAlchemy remembers a
    statement's cache key on the object, and building an ON CONFLICT clause (its `excluded`
    columns) cost more than running it: a turn's statements built anew each time were a
    quarter of its store time."""
    by_dialect = functools.cache(build)

    def of(connection: AsyncConnection | sa.Connection) -> Statement:
        return by_dialect(connection.dialect.name)

    return of


def now_or(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def by_channel(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Addresses grouped by channel, from (channel, address) pairs."""
    grouped: dict[str, list[str]] = {}
    for channel, address in keys:
        grouped.setdefault(channel, []).append(address)
    return grouped
