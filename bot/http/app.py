"""The FastAPI application: routes stay thin, the lifespan owns start-up and shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bot.channels import web
from bot.channels.line.adapter import LineChannel
from bot.channels.slack.adapter import SlackChannel
from bot.config import Settings
from bot.core.backpressure import Foreground
from bot.core.ports import ChannelPlugin
from bot.errors import BotError, StoreError
from bot.http import console
from bot.http.asgi import App
from bot.models import Mode
from bot.records import InboxHealth
from bot.storable_text import scrub_json
from bot.wiring import Runtime

log = logging.getLogger(__name__)


# Channel adapters beyond the web chat; each is enabled or not by its own settings.
CHANNELS: list[ChannelPlugin] = [LineChannel(), SlackChannel()]


async def start_background(runtime: Runtime) -> None:
    """Handoff timeouts and repairs, and the events recorded before the last stop."""
    runtime.desk.start()
    runtime.teardown.append(runtime.desk.close)
    recovered = await runtime.worker.recover()
    if recovered:
        log.info("resuming %d events recorded before the last stop", recovered)


def create_app(
    settings: Settings | None = None, *, foreground: Foreground | None = None
) -> FastAPI:
    """`foreground`: shared with a `yarigai worker` (WORKER_MODE=separate; see `yarigai serve`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, foreground=foreground)
        app.state.runtime = runtime
        for plugin in CHANNELS:
            await plugin.setup(app, runtime)
        await console.setup(app, runtime)
        if runtime.background:
            await start_background(runtime)
        else:
            log.info("WORKER_MODE=separate: LINE and Slack events are run by `yarigai worker`")
        try:
            yield
        finally:
            await runtime.close()

    app = App(title="yarigai", version="0.1.0", lifespan=lifespan)
    app.include_router(web.router)
    for plugin in CHANNELS:
        plugin.mount(app, settings)
    console.mount(app, settings)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        try:
            await runtime.store.ping()
        except StoreError as exc:
            log.warning("not ready: the store does not answer (%s)", type(exc).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        waited = _oldest_wait(await runtime.store.inbox_health())
        if waited > settings.inbox_stall_seconds:
            # Events are recorded but nobody runs them: workers down, stuck or far behind.
            log.warning("not ready: an event has waited %.0f s to be run", waited)
            return JSONResponse(
                {"status": "inbox not draining", "oldest_pending_seconds": round(waited)},
                status_code=503,
            )
        return JSONResponse({"status": "ready", "flows": sorted(runtime.flows)})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        health = await runtime.store.inbox_health()
        runtime.metrics.set_inbox(health.pending, _oldest_wait(health), health.failed)
        by_mode = await runtime.store.counts_by_mode()
        runtime.metrics.set_conversation_counts(
            await runtime.store.counts_by_state(), by_mode.get(Mode.WAITING.value, 0)
        )
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, but scrubbed: it echoes the input, and a lone surrogate in it
        # could not even be encoded (a 500 instead of the 422).
        detail = scrub_json(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(BotError)
    async def bot_error(_: Request, exc: BotError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return JSONResponse({"error": type(exc).__name__}, status_code=500)

    return app


def _oldest_wait(health: InboxHealth) -> float:
    """Seconds the oldest event not run yet has waited; 0 when none waits."""
    if health.oldest_received is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - health.oldest_received).total_seconds())
