"""`yarigai` command line: serve, chat in the terminal, and the tool groups of other modules."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bot import tracing
from bot.config import Settings
from bot.errors import BotError
from bot.logs import configure

if TYPE_CHECKING:
    from bot.cli.worker import Companion

log = logging.getLogger(__name__)


@click.group()
def main() -> None:
    """yarigai: a career chatbot for back-office workers."""


@main.command()
@click.option("--host", default=None, help="Overrides HOST.")
@click.option("--port", type=int, default=None, help="Overrides PORT.")
@click.option(
    "--with-worker/--no-worker",
    default=True,
    help="With WORKER_MODE=separate: start `yarigai worker` beside the server (default), "
    "or leave it to be run elsewhere.",
)
def serve(host: str | None, port: int | None, with_worker: bool) -> None:
    """Run the web server (web chat, webhooks, console)."""
    import uvicorn

    from bot.flows.loader import load_flows
    from bot.http.app import create_app

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    tracing.configure()
    _require_flows(settings)
    try:
        load_flows(settings.flows_dir)  # refuse to start on a broken flow, with its file:line
    except BotError as exc:
        click.echo(f"refusing to start: a flow is broken\n{exc}", err=True)
        sys.exit(1)
    workers: list[Companion] = []
    foreground = None
    if settings.worker_mode == "separate" and with_worker:
        from bot.cli.worker import Companion
        from bot.core.backpressure import Foreground, SharedMoment

        # The workers' batches of turns give way to this server's webhooks (backpressure.py).
        _remove_stale_boards()
        handle, name = tempfile.mkstemp(prefix=f"{BOARD_PREFIX}{os.getpid()}-")
        os.close(handle)
        board = Path(name)
        foreground = Foreground(publish=SharedMoment.create(board))
        if settings.worker_processes is not None:
            log.warning(
                "WORKER_PROCESSES is deprecated: set SERVE_WORKERS instead (how many workers "
                "`yarigai serve` starts; they take conversations by lease)"
            )
        count = settings.workers_beside_server
        workers = [Companion.start(board, number=index + 1) for index in range(count)]
    if workers:
        # uvicorn re-raises SIGTERM after its graceful shutdown; ending by SystemExit instead
        # lets the `finally` below stop the workers and remove the shared file.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        uvicorn.run(
            create_app(settings, foreground=foreground),
            host=host or settings.host,
            port=port or settings.port,
            log_config=None,
            proxy_headers=True,
        )
    finally:
        for worker in workers:
            worker.stop()
        if workers:
            board.unlink(missing_ok=True)


@main.command()
@click.option(
    "--nice",
    type=click.IntRange(0, 19),
    default=10,
    help="Niceness: how far behind the web server it stays for the CPU (0: level with it).",
)
@click.option(
    "--foreground-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The web server's count of webhooks in flight, to give way to (`yarigai serve` "
    "passes it to the worker it starts).",
)
@click.option(
    "--parent-pid",
    type=int,
    default=None,
    help="Stop when this process (the `yarigai serve` that started the worker) is gone.",
)
def worker(nice: int, foreground_file: Path | None, parent_pid: int | None) -> None:
    """Run LINE and Slack events for web servers in WORKER_MODE=separate (any number of
    workers, on any hosts, share a database: each runs the conversations it holds a lease on)."""
    if parent_pid is not None:
        from bot.cli.parent import die_with_parent

        die_with_parent(parent_pid)  # `python -m bot.cli` did it already; `yarigai` here
    from bot.cli.worker import run

    settings = Settings()
    configure(settings.log_level, settings.log_format)
    tracing.configure()
    _require_flows(settings)
    try:
        asyncio.run(
            run(
                settings,
                nice=nice,
                foreground_file=foreground_file,
                parent=parent_pid,
            )
        )
    except BotError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


@main.command()
@click.option("--user", default="terminal", help="Conversation address (keeps your progress).")
def chat(user: str) -> None:
    """Talk to the bot in the terminal; choices are numbered."""
    from bot.cli.chat import run_chat

    settings = Settings()
    configure("WARNING", settings.log_format)
    try:
        asyncio.run(run_chat(settings, user=user))
    except BotError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except (EOFError, KeyboardInterrupt):
        click.echo()


BOARD_PREFIX = "yarigai-foreground-"


def _remove_stale_boards() -> None:
    """The shared files of servers killed before they could remove theirs (their pid is in
    the name)."""
    if not Path("/proc").is_dir():  # no way to tell whose they are
        return
    for path in Path(tempfile.gettempdir()).glob(f"{BOARD_PREFIX}*"):
        pid = path.name.removeprefix(BOARD_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


def _require_flows(settings: Settings) -> None:
    """Refuse to start, saying what to set, when FLOWS_DIR holds no flows (e.g. `yarigai serve`
    run outside the repository, whose flows/ it reads by default)."""
    where = settings.flows_dir.resolve()
    if not any(where.glob("*.yaml")):
        click.echo(
            f"refusing to start: no flow files (*.yaml) in {where}\n"
            "Set FLOWS_DIR to the directory of the flows (the repository's flows/), "
            "e.g. FLOWS_DIR=/path/to/yarigai/flows yarigai serve",
            err=True,
        )
        sys.exit(1)


def _attach_groups() -> None:
    from bot.cli.agents import agents
    from bot.cli.flows import flows
    from bot.cli.line import line
    from bot.cli.nlu import nlu
    from bot.cli.users import users

    main.add_command(flows)
    main.add_command(agents)
    main.add_command(nlu)
    main.add_command(users)
    main.add_command(line)


_attach_groups()


if __name__ == "__main__":
    main()
