"""`yarigai` command line: serve, chat in the terminal, and the tool groups of other modules."""

from __future__ import annotations

import asyncio
import sys

import click

from bot.config import Settings
from bot.errors import BotError
from bot.logs import configure


@click.group()
def main() -> None:
    """yarigai: a career chatbot for back-office workers."""


@main.command()
@click.option("--host", default=None, help="Overrides HOST.")
@click.option("--port", type=int, default=None, help="Overrides PORT.")
def serve(host: str | None, port: int | None) -> None:
    """Run the web server (web chat, webhooks, console)."""
    import uvicorn

    from bot.app import create_app
    from bot.flows.loader import load_flows

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    try:
        load_flows(settings.flows_dir)  # refuse to start on a broken flow, with its file:line
    except BotError as exc:
        click.echo(f"refusing to start: a flow is broken\n{exc}", err=True)
        sys.exit(1)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        proxy_headers=True,
    )


@main.command()
@click.option("--user", default="terminal", help="Conversation address (keeps your progress).")
def chat(user: str) -> None:
    """Talk to the bot in the terminal; choices are numbered."""
    from bot.terminal import run_chat

    settings = Settings()
    configure("WARNING", settings.log_format)
    try:
        asyncio.run(run_chat(settings, user=user))
    except BotError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except (EOFError, KeyboardInterrupt):
        click.echo()


def _attach_groups() -> None:
    from bot.cli_agents import agents
    from bot.cli_flows import flows
    from bot.cli_nlu import nlu

    main.add_command(flows)
    main.add_command(agents)
    main.add_command(nlu)


_attach_groups()


if __name__ == "__main__":
    main()
