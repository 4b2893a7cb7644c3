"""`yarigai worker`: runs the LINE and Slack events that web servers in WORKER_MODE=separate
record, and the background jobs (delivery sweeps, retention purges, handoff timeouts).

Any number of workers, on any hosts, may share a database: a worker runs the events of the
conversations it holds a lease on, so one user's events still run one at a time, in order. It
talks to LINE and Slack itself, with the same channel set-up as a web server, and finds new
events as `Worker.follow` says (woken by NOTIFY on PostgreSQL, reading the SQLite inbox).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot.core.backpressure import Foreground, SharedMoment
from bot.wiring import build

log = logging.getLogger(__name__)

PARENT_CHECK = 1.0
"""Seconds between checks that the server which started the worker still runs."""


async def run(
    settings: Settings,
    *,
    nice: int = 0,
    foreground_file: Path | None = None,
    parent: int | None = None,
) -> None:
    """Until SIGTERM or SIGINT; then finish what is running (a few seconds at most) and stop.

    `foreground_file`: the web server's count of webhooks in flight (`yarigai serve` passes
    it), which batches of turns wait on. `parent`: the pid of the `yarigai serve` that
    started it, which it does not outlive."""
    if nice:
        # Behind the web server for the CPU: its quick 200 to a webhook matters more than any
        # one reply, and what waits here is durable.
        os.nice(nice)
    watch = SharedMoment(foreground_file) if foreground_file else None
    runtime = await build(settings, "worker", foreground=Foreground(watch=watch))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if parent is not None:  # started by `yarigai serve`: stop when it is gone
        runtime.worker.spawn(_stop_with_parent(parent, stop))
    try:
        await runtime.start()
        log.info("worker running events recorded by the web servers")
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


RESTART_FIRST = 1.0
RESTART_MOST = 30.0
"""Seconds `yarigai serve` waits before restarting a worker that died: doubling from the
first while it keeps dying, at most the second."""
RESTART_SETTLED = 60.0
"""A worker that ran this many seconds before dying is restarted after RESTART_FIRST again."""


@dataclass
class Companion:
    """`yarigai worker` started by `yarigai serve` (WORKER_MODE=separate). If it dies, the
    server restarts it (RESTART_FIRST, doubling to RESTART_MOST) and keeps acknowledging
    webhooks meanwhile: the events wait in the inbox, durable."""

    command: list[str]
    number: int  # 1..SERVE_WORKERS, for the log
    process: subprocess.Popen[bytes]
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, foreground_file: Path, *, number: int = 1) -> Companion:
        command = [sys.executable, "-m", "bot.cli", "worker"]
        command += ["--foreground-file", str(foreground_file)]
        command += ["--parent-pid", str(os.getpid())]
        companion = cls(command=command, number=number, process=subprocess.Popen(command))
        threading.Thread(target=companion._watch, name="worker-watch", daemon=True).start()
        companion._started()
        return companion

    def stop(self, grace: float = 15.0) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _started(self) -> None:
        log.info("started `yarigai worker` %d (pid %d)", self.number, self.process.pid)

    def _watch(self) -> None:
        pause = RESTART_FIRST
        while True:
            began = time.monotonic()
            code = self.process.wait()
            if time.monotonic() - began >= RESTART_SETTLED:
                pause = RESTART_FIRST
            if self._stopping.is_set():
                return
            log.error(
                "`yarigai worker` %d exited with %s; restarting it in %.0f s",
                self.number,
                code,
                pause,
            )
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.command)
            self._started()
            pause = min(pause * 2, RESTART_MOST)
