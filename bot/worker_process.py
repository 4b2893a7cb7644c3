"""`yarigai worker`: runs the LINE and Slack events that web servers in WORKER_MODE=separate
record, and the background jobs (delivery sweeps, retention purges, handoff timeouts).

Only one worker may run per database: events of one user must be run one at a time, in order.
It talks to LINE and Slack itself, with the same channel set-up as a web server, and finds new
events by reading the inbox (see `Worker.follow`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from bot.app import CHANNELS, start_background
from bot.config import Settings
from bot.priority import Foreground, SharedMoment
from bot.runtime import Runtime

log = logging.getLogger(__name__)

PARENT_CHECK = 1.0
"""Seconds between checks that the server which started the worker still runs."""


async def run(
    settings: Settings,
    *,
    nice: int = 0,
    foreground_file: Path | None = None,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """Until SIGTERM or SIGINT; then finish what is running (a few seconds at most) and stop.

    `foreground_file`: the web server's count of webhooks in flight (`yarigai serve` passes
    it), which batches of turns wait on. `shard` (i, n): run the events of part i of n of the
    users; the first part's worker also runs the background jobs."""
    if nice:
        # Behind the web server for the CPU: its quick 200 to a webhook matters more than any
        # one reply, and what waits here is durable.
        os.nice(nice)
    watch = SharedMoment(foreground_file) if foreground_file else None
    runtime = await Runtime.start(
        settings, worker_process=True, shard=shard, foreground=Foreground(watch=watch)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if foreground_file is not None:  # started by `yarigai serve`: stop when it is gone
        runtime.worker.spawn(_stop_with_parent(os.getppid(), stop))
    try:
        # The channels keep their state on an app, as in a web server; this one serves nothing.
        holder = FastAPI()
        for plugin in CHANNELS:
            await plugin.setup(holder, runtime)
        if runtime.background:
            await start_background(runtime)
        log.info("worker %d/%d running events recorded by the web servers", shard[0] + 1, shard[1])
        await runtime.worker.follow(stop, pace=runtime.service.foreground.step_aside)
    finally:
        log.info("worker stopping")
        await runtime.close()


async def _stop_with_parent(parent: int, stop: asyncio.Event) -> None:
    # The server may end without stopping us (a SIGKILL, or uvicorn re-raising SIGTERM after
    # its shutdown): once this process has another parent, the server is gone.
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("`yarigai serve` is gone; the worker stops too")
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK)


@dataclass
class Companion:
    """`yarigai worker` started by `yarigai serve` (WORKER_MODE=separate): if it dies, the
    server stops too, so that whatever restarts one restarts both."""

    process: subprocess.Popen[bytes]
    _stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, foreground_file: Path, shard: tuple[int, int] = (0, 1)) -> Companion:
        command = [sys.executable, "-m", "bot.cli", "worker"]
        command += ["--foreground-file", str(foreground_file)]
        command += ["--shard", f"{shard[0] + 1}/{shard[1]}"]
        companion = cls(process=subprocess.Popen(command))
        threading.Thread(target=companion._watch, name="worker-watch", daemon=True).start()
        index, count = shard
        log.info("started `yarigai worker` %d/%d (pid %d)", index + 1, count, companion.process.pid)
        return companion

    def stop(self, grace: float = 15.0) -> None:
        self._stopping.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _watch(self) -> None:
        code = self.process.wait()
        if not self._stopping.is_set():
            log.error("`yarigai worker` exited with %s; stopping the server as well", code)
            os.kill(os.getpid(), signal.SIGTERM)
