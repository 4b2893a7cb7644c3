"""The FastAPI application: routes stay thin, the lifespan owns start-up and shutdown."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from bot.channels.line.adapter import WEBHOOK_PATH, LineAdapter, LineChannel
from bot.channels.line.adapter import enabled as line_enabled
from bot.channels.line.webhook import SIGNATURE_HEADER
from bot.channels.slack.adapter import PATH as SLACK_PATH
from bot.channels.slack.adapter import SlackChannel
from bot.channels.slack.adapter import enabled as slack_enabled
from bot.config import Settings
from bot.core.backpressure import Foreground
from bot.core.clock import Clock
from bot.core.jobs import JobsTuning
from bot.core.outbox import OutboxTuning
from bot.errors import BotError, StoreError
from bot.http import calendar_file, console, web_chat
from bot.http.asgi import App, add_post, answer, header, read_body
from bot.http.console.feed import ConsoleFeed
from bot.http.errors import Problem, http_error, problem
from bot.http.rates import Rates
from bot.models import Mode
from bot.records import InboxHealth
from bot.storable_text import scrub_json
from bot.tracing import span
from bot.wiring import DEFAULT_CHANNELS, DEFAULT_JOBS, DEFAULT_TUNING, Runtime, build, role_of

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    foreground: Foreground | None = None,
    channels: Sequence[LineChannel | SlackChannel] = DEFAULT_CHANNELS,
    outbox: OutboxTuning = DEFAULT_TUNING,
    jobs: JobsTuning = DEFAULT_JOBS,
    clock: Clock | None = None,
) -> FastAPI:
    """`foreground`: shared with a `yarigai worker` (WORKER_MODE=separate; see `yarigai serve`).
    `channels`, `outbox`, `jobs`: the channels' and the background work's tuning; `clock`:
    the timers' (tests pass a fake one)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feed = ConsoleFeed()
        runtime = await build(
            settings,
            role_of(settings),
            foreground=foreground,
            channels=channels,
            surfaces=[feed],
            outbox=outbox,
            jobs=jobs,
            clock=clock,
        )
        app.state.runtime = runtime
        app.state.line = runtime.line
        app.state.slack = (
            AsyncSlackRequestHandler(runtime.slack.bolt) if runtime.slack is not None else None
        )
        console.setup(app, runtime, feed)
        try:
            await runtime.start()
            yield
        finally:
            feed.close()
            await runtime.close()

    # FastAPI's body limit: 413 as soon as Content-Length or the bytes read pass it, before
    # the rest is read (the LINE webhook has its own, `read_body`; Slack's route its own).
    app = App(
        title="yarigai", version="0.1.0", lifespan=lifespan, max_body_size=settings.max_body_bytes
    )
    app.state.rates = Rates(settings)
    # Signs web chat session ids (bot/http/web_chat.py); a random key lasts as long as the
    # process, which only costs chats that never sent a message.
    secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
    app.state.chat_key = (
        hashlib.sha256(b"web chat\0" + secret.encode()).digest()
        if secret
        else secrets.token_bytes(32)
    )
    app.include_router(web_chat.router)
    app.include_router(calendar_file.router)
    if any(isinstance(c, LineChannel) for c in channels) and line_enabled(settings):
        # Plain ASGI: the body reaches the signature check as raw bytes, and the hottest path
        # of the bot skips FastAPI's stack (bot/http/asgi.py).
        add_post(app, WEBHOOK_PATH, _line_webhook)
    if any(isinstance(c, SlackChannel) for c in channels) and slack_enabled(settings):
        app.add_api_route(
            SLACK_PATH,
            _slack_events,
            methods=["POST"],
            include_in_schema=False,
            max_body_size=settings.slack_max_body_bytes,
        )
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

    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not metrics_token:
        log.info("/metrics is off: set METRICS_TOKEN to scrape it")

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        include_in_schema=False,
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics, for a scraper holding METRICS_TOKEN (they tell how many
        conversations and handoffs there are: not for anyone who asks)."""
        if not metrics_token:
            return JSONResponse({"error": "not_found", "message": "Not Found"}, status_code=404)
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {metrics_token}".encode()):
            return JSONResponse(
                {"error": "unauthorized", "message": "a valid metrics token is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        runtime: Runtime = request.app.state.runtime
        health = await runtime.store.inbox_health()
        runtime.metrics.set_inbox(health.pending, _oldest_wait(health), health.failed)
        by_mode = await runtime.store.counts_by_mode()
        runtime.metrics.set_conversation_counts(
            await runtime.store.counts_by_state(), by_mode.get(Mode.WAITING.value, 0)
        )
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    # One error shape for every JSON answer (`bot.http.errors.Problem`).
    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path; a path served by
            # several routes (GET and POST apart) allows them all.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(
            problem(exc.status_code, exc.detail), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own errors, but scrubbed: they echo the input, and a lone surrogate in it
        # could not even be encoded (a 500 instead of the 422).
        details = scrub_json(jsonable_encoder(exc.errors()))
        body = Problem(
            error="invalid", message="the request does not match the schema", details=details
        )
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)

    @app.exception_handler(BotError)
    async def bot_error(_: Request, exc: BotError) -> JSONResponse:
        log.error("request failed: %s", exc)
        answer = http_error(exc)
        body = Problem(error=answer.code, message=answer.message)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=answer.status)

    return app


def _allowed_methods(request: Request) -> list[str]:
    allowed: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                allowed |= route.methods
    return sorted(allowed)


def _oldest_wait(health: InboxHealth) -> float:
    """Seconds the oldest event not run yet has waited; 0 when none waits."""
    if health.oldest_received is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - health.oldest_received).total_seconds())


async def _line_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /webhooks/line, as plain ASGI (see `bot.http.asgi`)."""
    line: LineAdapter | None = getattr(scope["app"].state, "line", None)
    if line is None:  # the lifespan has not set the channel up (yet)
        await answer(send, 503, {"error": "starting"})
        return
    try:
        body = await read_body(receive, scope, line.max_body)
        client = scope["client"][0] if scope.get("client") else "?"
        with span("webhook line"):
            status, error = await line.acknowledge(
                body, header(scope, SIGNATURE_HEADER.lower().encode()), client
            )
    except BotError as exc:
        log.error("LINE webhook failed: %s", exc)
        answer_ = http_error(exc)
        status, error = answer_.status, answer_.code
    except Exception:
        log.exception("LINE webhook failed")
        status, error = 500, "internal error"
    await answer(send, status, {"error": error} if error else None)


async def _slack_events(request: Request) -> Response:
    handler: AsyncSlackRequestHandler | None = getattr(request.app.state, "slack", None)
    if handler is None:  # the lifespan has not set the channel up (yet)
        return Response(status_code=503)
    runtime: Runtime = request.app.state.runtime
    with runtime.worker.serving(), span("webhook slack"):
        try:
            return await handler.handle(request)
        except RecursionError:
            # Bolt parses the JSON before it checks the signature: nested thousands deep, no
            # Slack request is (and LINE's and ours get the same 400).
            return JSONResponse(problem(400, "body is nested too deeply"), status_code=400)
