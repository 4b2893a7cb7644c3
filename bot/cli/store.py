"""What the store-using commands share: run one action against the configured store, and fail
with a message on standard error."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from bot.config import Settings
from bot.errors import BotError
from bot.store import SqlStore

T = TypeVar("T")


def run_with_store(action: Callable[[SqlStore], Awaitable[T]]) -> T:
    """`action` on the store of DATABASE_URL, closed after; a BotError ends the command."""
    settings = Settings()

    async def main() -> T:
        store = await SqlStore.open(settings.database_url)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except BotError as error:
        fail(str(error))


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
