"""`yarigai users`: a user's data rights (Japan's APPI): everything kept about them, as JSON,
and deleting it all. Each use is recorded in the audit log (who ran it, when, what)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click

from bot.config import Settings
from bot.errors import BotError
from bot.models import Channel, ConversationKey
from bot.store import SqlStore

T = TypeVar("T")


@click.group()
def users() -> None:
    """Users' data: export it, or delete it (recorded in the audit log)."""


@users.command()
@click.argument("user", metavar="CHANNEL:ID")
def export(user: str) -> None:
    """Print everything stored about USER as JSON (e.g. line:U0123..., web:SESSION)."""
    key = _key(user)
    document = _run(lambda store: store.export_user(key, who=_who()))
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@users.command()
@click.argument("user", metavar="CHANNEL:ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(user: str, yes: bool) -> None:
    """Delete everything stored about USER (conversation, transcript, handoffs, replies, the
    text of their inbox events); only the audit entry remains."""
    key = _key(user)
    if not yes:
        click.confirm(f"Delete everything stored about {user}?", abort=True)
    counts = _run(lambda store: store.forget_user(key, who=_who()))
    click.echo(
        f"deleted {counts['conversations']} conversation(s), {counts['transcript']} transcript "
        f"line(s); blanked {counts['inbox']} inbox event(s)"
    )


def _key(user: str) -> ConversationKey:
    channel, _, address = user.partition(":")
    if not address:
        _fail(f"{user!r} names no ID: CHANNEL:ID")
    try:
        return ConversationKey(channel=Channel(channel), address=address)
    except ValueError:
        names = ", ".join(c.value for c in Channel)
        _fail(f"{user!r} is not CHANNEL:ID with CHANNEL one of {names}")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(action: Callable[[SqlStore], Awaitable[T]]) -> T:
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
        _fail(str(error))


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
