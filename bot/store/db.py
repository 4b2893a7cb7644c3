"""Connecting to the database and migrating it: URLs, engines, `alembic upgrade head`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final, Self
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import event, func, select
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

from bot.errors import StoreError
from bot.store import sqlite_inline
from bot.store.file_turn import WAL_KEPT, share_file
from bot.store.tx import begin

ALEMBIC_INI: Final = Path(__file__).with_name("alembic.ini")

MIGRATION_LOCK: Final = 0x7961726967616900
"""pg_advisory_lock key ("yarigai\\0"): serialises migrations of processes starting together."""

_ASYNC_SCHEMES: Final = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",  # Heroku-style URLs
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_WAL_PATIENCE: Final = 10.0  # seconds
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Keep Japanese readable in the database rather than as \u escapes.
_dumps: Final = partial(json.dumps, ensure_ascii=False)
_alembic_turns: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def database_url(url: str) -> str:
    """Turn a plain sqlite:// or postgresql:// URL into one naming our async driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError("not a database URL: expected sqlite:///path or postgresql://...")
    async_scheme = _ASYNC_SCHEMES.get(scheme.lower())
    if async_scheme is None:
        # Only the scheme in the message: the rest may hold a password.
        raise StoreError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://"
        )
    return f"{async_scheme}://{rest}"


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """An engine for `url`; `schema` (PostgreSQL only) replaces `public` on the search path."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise StoreError("schema is for PostgreSQL; SQLite has one schema per file")
        _make_parent_directory(parsed.database)
        pool: dict[str, Any] = {}
        if parsed.database and parsed.database != ":memory:":
            # One connection: SQLite writes one transaction at a time anyway, and callers
            # queueing here (in order, without threads) is cheaper than connections contending
            # for the file lock (busy_timeout polling, "database is locked" under load).
            pool = {"pool_size": 1, "max_overflow": 0}
        args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(parsed)
        engine = create_async_engine(
            parsed,
            json_serializer=_dumps,
            hide_parameters=True,
            # The pool's ROLLBACK on every check-in is a needless call even after a COMMIT;
            # `_sqlite_reset` rolls back only a transaction still open.
            pool_reset_on_return=None,
            async_creator=sqlite_inline.creator(args, kwargs),
            **pool,
        )
        database = parsed.database or ""
        shared = database not in {"", ":memory:"} and not database.startswith("file:")
        if shared:
            share_file(engine.sync_engine, database)
        event.listen(engine.sync_engine, "connect", partial(_sqlite_on_connect, shared=shared))
        event.listen(engine.sync_engine, "reset", _sqlite_reset)
        return engine
    connect_args: dict[str, Any] = {}
    if schema is not None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"schema name {schema!r} is not a plain lowercase identifier")
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(
        parsed,
        json_serializer=_dumps,
        hide_parameters=True,  # errors and logs must not carry users' messages
        connect_args=connect_args,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,  # a restarted server or a proxy idle timeout leaves dead sockets
        pool_recycle=1800,
    )


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to call from processes starting together."""
    try:
        async with _alembic_turn(), engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                await _migrate_sqlite(connection)
            else:
                await _migrate_postgresql(connection)
    except (SQLAlchemyError, CommandError, OSError) as error:
        raise StoreError(f"migration failed: {error}") from error


async def _migrate_postgresql(connection: AsyncConnection) -> None:
    # A transaction-scoped lock, released by the commit: the second process waits, then finds
    # the schema at head and does nothing. PostgreSQL DDL is transactional, so it is all or none.
    await connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    await connection.run_sync(_upgrade)
    await connection.commit()


async def _migrate_sqlite(connection: AsyncConnection) -> None:
    # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, dropping a
    # parent table would cascade-delete its children. The pragma is ignored inside a
    # transaction, so it goes first, and is restored before the connection returns to the pool.
    await _use_wal(connection)
    await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    await connection.commit()
    try:
        # IMMEDIATE takes the write lock at once, so a second process waits (busy_timeout)
        # instead of creating the same tables; SQLite DDL is transactional too.
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
        await connection.run_sync(_upgrade)
        broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
        if broken:
            raise StoreError(f"migration left rows with dangling foreign keys: {broken[:5]}")
        await connection.commit()
    finally:
        await connection.rollback()
        await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        await connection.commit()


async def _use_wal(connection: AsyncConnection) -> None:
    """Switch the file to write-ahead logging, so readers (web, console) and the writer
    (worker) never block each other. The mode is stored in the file, so once is enough."""
    deadline = asyncio.get_running_loop().time() + _WAL_PATIENCE
    while True:
        try:
            await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            await connection.commit()
            return
        except OperationalError:
            # The switch needs the file to itself and SQLite does not apply busy_timeout to
            # it: a second process starting at the same moment gets "database is locked".
            await connection.rollback()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _alembic_turn() -> asyncio.Lock:
    # Alembic keeps the running migration in module globals: two upgrades interleaving on one
    # event loop (two databases, say) would trample each other, so they take turns.
    return _alembic_turns.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def _upgrade(connection: Connection) -> None:
    config = Config(str(ALEMBIC_INI))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _make_parent_directory(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_reset(dbapi_connection: Any, _record: Any, reset_state: PoolResetState) -> None:
    """What the pool does when a connection comes back (SQLAlchemy's documented custom reset)."""
    if reset_state.terminate_only:
        return
    if dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, *, shared: bool) -> None:
    cursor = dbapi_connection.cursor()
    # Writers queue for up to 5 s instead of failing at once with "database is locked".
    cursor.execute("PRAGMA busy_timeout=5000")
    # With WAL, NORMAL syncs at checkpoints rather than at every commit: a crash of this
    # process loses nothing (the commit is in the OS's copy of the WAL file), and only an OS
    # crash or power loss may roll back the last transactions; the database stays consistent.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite, per connection
    if not shared:
        cursor.close()
        return
    # No checkpoint inside a commit: the commit that crossed SQLite's threshold (a webhook's,
    # say) would copy the WAL into the database and sync it, holding up everyone waiting. The
    # writers' turn starts one in a thread once the WAL has grown (`file_turn`); a checkpoint
    # then resets the WAL, which is cut back to the limit.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")
    cursor.close()


class Database:
    """An engine and its transactions: the base every part of `SqlStore` shares."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> Self:
        """Connect to `url` (plain or async form) and migrate it to the newest schema."""
        engine = create_engine(url, schema=schema)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine=engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        async with self._begin() as connection:
            await connection.execute(select(1))

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        async with begin(self._engine) as connection:
            yield connection

    @asynccontextmanager
    async def _scan(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that only reads, and may take long (on SQLite: in a thread)."""
        async with begin(self._engine, scanning=True) as connection:
            yield connection

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that only reads (on SQLite it does not wait for writers)."""
        async with begin(self._engine, reading=True) as connection:
            yield connection
