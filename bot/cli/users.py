"""`yarigai users`: a user's data rights (Japan's APPI): everything kept about them, as JSON,
and deleting it all. Each use is recorded in the audit log (who ran it, when, what)."""

from __future__ import annotations

import getpass
import json
from typing import TypeVar

import click

from bot.cli.store import fail, run_with_store
from bot.models import Channel, ConversationKey

T = TypeVar("T")


@click.group()
def users() -> None:
    """Users' data: export it, or delete it (recorded in the audit log)."""


@users.command()
@click.argument("user", metavar="CHANNEL:ID")
def export(user: str) -> None:
    """Print everything stored about USER as JSON (e.g. line:U0123..., web:SESSION)."""
    key = _key(user)
    document = run_with_store(lambda store: store.export_user(key, who=_who()))
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
    counts = run_with_store(lambda store: store.forget_user(key, who=_who()))
    click.echo(
        f"deleted {counts['conversations']} conversation(s), {counts['transcript']} transcript "
        f"line(s); blanked {counts['inbox']} inbox event(s)"
    )


def _key(user: str) -> ConversationKey:
    channel, _, address = user.partition(":")
    if not address:
        fail(f"{user!r} names no ID: CHANNEL:ID")
    try:
        return ConversationKey(channel=Channel(channel), address=address)
    except ValueError:
        names = ", ".join(c.value for c in Channel)
        fail(f"{user!r} is not CHANNEL:ID with CHANNEL one of {names}")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
