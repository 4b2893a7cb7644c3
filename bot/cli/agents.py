"""`yarigai agents`: accounts for the agent console and tokens for the agent API."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import click

from bot.cli.store import fail, run_with_store
from bot.errors import BadInput, UnknownAgent
from bot.store import AgentStore, BookingStore, SqlStore

NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Agent names are short ASCII ids: they appear in URLs, logs and the mode-change record."""
MIN_PASSWORD: Final = 10
TOKEN_DAYS: Final = 90

T = TypeVar("T")


@click.group()
def agents() -> None:
    """Agent accounts (console sign-in) and API tokens."""


@agents.command()
@click.argument("name")
@click.option("--display-name", default=None, help="Shown to users as the sender (default NAME).")
@click.option(
    "--admin",
    is_flag=True,
    help="May see insights (/console/insights) and export and delete users' data through the agent API.",
)
@click.password_option(
    "--password",
    prompt="Password",
    help="Prompted for (hidden, twice) when not given; prefer the prompt over the shell history.",
)
def add(name: str, display_name: str | None, admin: bool, password: str) -> None:
    """Create an agent account NAME that can sign in to /console."""
    from bot.http.console.auth import hash_password

    _check_name(name)
    if len(password) < MIN_PASSWORD:
        fail(f"the password needs at least {MIN_PASSWORD} characters")
    hashed = hash_password(password)
    agent = _run(
        lambda s: s.add(name, password_hash=hashed, display_name=display_name or name, admin=admin)
    )
    role = ", admin" if agent.admin else ""
    click.echo(f"added agent {agent.name} ({agent.display_name}{role})")


@agents.command()
@click.argument("name")
@click.option("--label", default="", help="What the token is for, e.g. the tool using it.")
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=TOKEN_DAYS,
    show_default=True,
    help="The token stops working after this many days.",
)
@click.option("--revoke", is_flag=True, help="Revoke NAME's tokens instead of making one.")
def token(name: str, label: str, days: int, revoke: bool) -> None:
    """Create an API token for NAME and print it (it is shown only this once); with --revoke,
    end every token NAME has."""
    if revoke:
        revoked = _run(lambda s: s.revoke_tokens(name))
        click.echo(f"revoked {revoked} token(s) of {name}")
        return
    from bot.http.console.auth import new_token

    secret, hashed = new_token()
    expires = datetime.now(UTC) + timedelta(days=days)
    _run(lambda s: s.add_token(name, token_hash=hashed, label=label, expires_at=expires))
    click.echo(secret)
    click.echo(
        f"Use it as 'Authorization: Bearer <token>' until {expires:%Y-%m-%d %H:%M} UTC; only "
        "its hash is stored, so keep it now.",
        err=True,
    )


@agents.command()
@click.argument("name")
def unlock(name: str) -> None:
    """Lift NAME's sign-in lockout (and delays) after wrong passwords."""
    _run(lambda s: s.unlock(name))
    click.echo(f"unlocked agent {name}")


@agents.command(name="list")
def list_agents() -> None:
    """List agent accounts."""
    for agent in _run(lambda s: s.all()):
        state = "disabled" if agent.disabled else "active"
        click.echo(f"{agent.name}\t{agent.display_name}\t{state}\t{agent.created_at:%Y-%m-%d}")


@agents.command()
@click.argument("name")
def disable(name: str) -> None:
    """Stop NAME signing in or using the API (sessions end at their next request)."""

    async def both(store: AgentStore) -> int:
        await store.disable(name)
        return await store.revoke_tokens(name)

    revoked = _run(both)
    click.echo(f"disabled agent {name}; revoked {revoked} token(s)")


@agents.command()
@click.argument("name")
@click.argument("rule", nargs=-1)
@click.option("--remove", "remove", type=int, default=None, help="Remove the rule with this id.")
def hours(name: str, rule: tuple[str, ...], remove: int | None) -> None:
    """NAME's consultation hours: list them, add one, or remove one by id.

    \b
    yarigai agents hours sato                           list (id, rule)
    yarigai agents hours sato weekly Tue 18:00-21:00    every Tuesday evening
    yarigai agents hours sato extra 2026-12-26 10:00-12:00
    yarigai agents hours sato off 2026-12-24            a day off (or: off DAY 12:00-13:00)
    yarigai agents hours sato --remove 3
    """
    from bot.booking.slots import describe_rule, parse_rule

    if rule and not 2 <= len(rule) <= 3:
        fail("give KIND DAY [HOURS], e.g. 'weekly Tue 18:00-21:00' or 'off 2026-12-24'")

    async def act(store: SqlStore) -> list[str]:
        bookings = BookingStore(engine=store.engine)
        agent = await AgentStore(engine=store.engine).get(name)
        if agent is None:
            raise UnknownAgent(name)
        if remove is not None and not await bookings.remove_rule(name, remove):
            raise BadInput(f"{name} has no rule {remove}")
        if rule:
            await bookings.add_rule(name, parse_rule(agent.id, *rule))
        return [f"{i}\t{describe_rule(r)}" for i, r in await bookings.rule_rows(name)]

    lines = run_with_store(act)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{name} has no consultation hours yet", err=True)


def _run(action: Callable[[AgentStore], Awaitable[T]]) -> T:
    return run_with_store(lambda store: action(AgentStore(engine=store.engine)))


def _check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        fail("NAME must be lowercase letters, digits, '.', '_' or '-' (up to 64)")
