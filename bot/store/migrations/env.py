"""Alembic environment: migrates the connection `bot.store.db.migrate` hands over.

Run from the alembic command line (to write a new revision), it connects to DATABASE_URL itself.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from bot.errors import StoreError
from bot.store.db import create_engine
from bot.store.schema import metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_command_line(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        run(connection)
        return
    if context.is_offline_mode():
        raise StoreError("offline (--sql) migrations are not supported")
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise StoreError("set DATABASE_URL to run alembic from the command line")
    asyncio.run(_run_from_command_line(url))


_main()
