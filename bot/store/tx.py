"""Transaction helpers shared by the repositories beside `SqlStore`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import BotError, StoreError


@asynccontextmanager
async def begin(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; database failures come out as StoreError, our own errors unchanged."""
    try:
        async with engine.begin() as connection:
            yield connection
    except BotError:
        raise
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        # Engines hide bound parameters, so this message carries no user text.
        raise StoreError(f"{type(error).__name__}: {error}") from error


def insert(connection: AsyncConnection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT that can say ON CONFLICT, on either backend."""
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


def now_or(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now
