"""Where channel adapters plug into the app, so adding one touches one line here.

A router mount runs when the app is created (routes must exist before start-up); a setup runs
in the lifespan with the started runtime (clients, worker handlers, teardown).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from bot.config import Settings
from bot.runtime import Runtime

RouterMount = Callable[[FastAPI, Settings], None]
Setup = Callable[[FastAPI, Runtime], Awaitable[None]]

CHANNEL_ROUTERS: list[RouterMount] = []
CHANNEL_SETUPS: list[Setup] = []
