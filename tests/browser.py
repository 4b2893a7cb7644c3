"""Shared harness for real-browser tests: the app under uvicorn, Debian's chromium via Playwright.

Importing this module skips the test module (with the reason shown) when chromium is absent,
except under CI=true, where a missing browser is an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Final

import pytest
import uvicorn

from bot.config import Settings
from bot.http.app import create_app

ROOT: Final = Path(__file__).resolve().parents[1]
CHROMIUM: Final = Path("/usr/bin/chromium")
IN_CI: Final = os.environ.get("CI", "").lower() == "true"
# Without the background-networking flags chromium keeps dialling out, which this machine refuses.
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS: Final = 8000


def require_chromium() -> None:
    if CHROMIUM.exists() and shutil.which(str(CHROMIUM)) is not None:
        return
    reason = f"{CHROMIUM} is not installed (apt-get install chromium); browser tests need it"
    if IN_CI:
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


def screenshot_path(name: str) -> Path:
    """docs/NAME when UPDATE_SCREENSHOT=1 (for the README), else a temporary file.

    Test runs then leave the work tree clean, and the screenshot is still taken and checked.
    """
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        return ROOT / "docs" / name
    return Path(tempfile.gettempdir()) / f"yarigai-{name}"


class ServedApp:
    """The app under uvicorn on a free port, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=1,  # the console's event streams would hold it open
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started")
            threading.Event().wait(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
