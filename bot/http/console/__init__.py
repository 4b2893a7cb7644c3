"""The agent console at /console (signed-in pages with a live feed) and the agent API at
/api/v1 (bearer tokens). `mount` adds the routes when the app is made; `setup` connects
them to the started runtime."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.config import Settings
from bot.http.console import api, bookings, events, insights, pages, shift
from bot.http.console.auth import SignInRequired
from bot.http.console.feed import ConsoleFeed
from bot.http.console.pages import SESSION_HOURS
from bot.http.errors import problem
from bot.store import AgentStore
from bot.wiring import Runtime

log = logging.getLogger(__name__)

CONSOLE_PATH: Final = "/console"
SESSION_COOKIE: Final = "yarigai_console"


@dataclass
class Console:
    """What the console routes need, on `app.state.console`."""

    runtime: Runtime
    agents: AgentStore
    feed: ConsoleFeed
    templates: jinja2.Environment


class ConsoleSessions:
    """Starlette's `SessionMiddleware`, for console paths only (/console and below).

    Only the console's routes use sessions; everything else (webhooks above all) skips the
    cookie's signature check and the per-request wrapping. A request elsewhere has no
    `request.session`, so a route outside /console cannot come to depend on the console's
    sign-in by accident: it fails loudly instead."""

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        secret_key: str,
        session_cookie: str,
        max_age: int,
        path: str,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
    ) -> None:
        self.app = app
        self.sessions = SessionMiddleware(
            app,
            secret_key=secret_key,
            session_cookie=session_cookie,
            max_age=max_age,
            path=path,
            same_site=same_site,
            https_only=https_only,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _in_console(scope):
            await self.sessions(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _in_console(scope: Scope) -> bool:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]  # Starlette's paths include the root path when one is set
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def mount(app: FastAPI, settings: Settings) -> None:
    secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
    if not secret:
        # Sessions then end with the process, and processes cannot share them.
        log.warning("SESSION_SECRET is not set: console sessions are signed with a random key")
        secret = secrets.token_urlsafe(32)
    app.add_middleware(
        ConsoleSessions,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_HOURS * 3600,
        path=CONSOLE_PATH,  # the cookie never travels with web chat or API requests
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    static = resources.files("bot.http.console").joinpath("static")
    app.mount("/console/static", StaticFiles(directory=str(static)), name="console-static")
    app.include_router(pages.public)
    app.include_router(pages.router)
    app.include_router(insights.router)
    app.include_router(shift.router)
    app.include_router(events.router)
    app.include_router(api.router)
    app.include_router(bookings.page)
    app.include_router(bookings.api)
    app.add_exception_handler(SignInRequired, _sign_in_required)


def setup(app: FastAPI, runtime: Runtime, feed: ConsoleFeed) -> None:
    """In the lifespan, once the runtime is built (`feed` is one of the desk's surfaces)."""
    app.state.console = Console(
        runtime=runtime,
        agents=AgentStore(engine=runtime.store.engine),
        feed=feed,
        templates=jinja2.Environment(
            loader=jinja2.PackageLoader("bot.http.console", "templates"),
            autoescape=True,  # every user and agent text in the pages is escaped
            trim_blocks=True,
            lstrip_blocks=True,
        ),
    )


async def _sign_in_required(request: Request, _: Exception) -> Response:
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return pages.sign_in_page(request, status_code=401)
    return JSONResponse(problem(401, "sign in to the console first"), status_code=401)


__all__ = ["Console", "ConsoleSessions", "mount", "setup"]
