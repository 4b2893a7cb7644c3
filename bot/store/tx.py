"""Transaction helpers shared by the store's modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import BotError, StoreError
from bot.tracing import span

IN_LIST: Final = 500
"""Values in one IN (...): well under SQLite's and asyncpg's bound-parameter limits."""


@asynccontextmanager
async def begin(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; database failures come out as StoreError, our own errors unchanged."""
    try:
        with span("store"):
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


def by_channel(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Addresses grouped by channel, from (channel, address) pairs."""
    grouped: dict[str, list[str]] = {}
    for channel, address in keys:
        grouped.setdefault(channel, []).append(address)
    return grouped
