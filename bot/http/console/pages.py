"""Console pages: sign-in, the queue, one conversation, and the agent's actions on it.

Forms work without JavaScript (POST, then a redirect); `console.js` sends the same forms with
fetch and asks for JSON, so the page never reloads.
"""

from __future__ import annotations

import logging
import math
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator

from bot.core.ports import AgentRef
from bot.errors import (
    AlreadyClaimed,
    DeliveryFailed,
    HandoffClosed,
    HandoffError,
    NotHolder,
    UnknownHandoff,
)
from bot.handoff.canned import VARIABLES, fill
from bot.handoff.desk import canned_values
from bot.http.console.auth import (
    SessionAgent,
    check_csrf,
    check_password,
    csrf_token,
    login_wait,
    session_agent,
)
from bot.http.console.views import HandoffView, detail_view, handoff_view
from bot.http.errors import http_error
from bot.http.rates import client_ip, rates
from bot.storable_text import require_storable
from bot.store import Agent, Handoff, HandoffOutcome, HandoffStore

if TYPE_CHECKING:
    from bot.http.console import Console

log = logging.getLogger(__name__)

MAX_TEXT: Final = 2000
SESSION_HOURS: Final = 12
"""One working day; agents sign in again the next (the cookie and the session row alike)."""
SECURITY_HEADERS: Final = {
    # Scripts and styles only from our own static files: an injected tag would not run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # conversations must not linger in shared caches
    "X-Content-Type-Options": "nosniff",
}

HandoffId = Annotated[int, Path(ge=1)]
Text = Annotated[str, Form(min_length=1, max_length=MAX_TEXT), AfterValidator(require_storable)]

public = APIRouter(prefix="/console", include_in_schema=False)
router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(session_agent)]
)
changes = [Depends(check_csrf)]


# ---------------------------------------------------------------- sign-in


@public.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    if isinstance(request.session.get("agent"), str):
        return RedirectResponse("/console", status_code=303)
    return sign_in_page(request)


@public.post("/login", dependencies=changes)
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Sign in. Tries are limited per address (RATE_LOGIN) and per name: growing delays
    after wrong passwords, then a lockout until `yarigai agents unlock NAME`."""
    refused = await rates(request).hit("login", client_ip(request))
    if refused is not None:
        return _slow_down(request, refused.retry_after)
    console, name = _console(request), name.strip()
    settings = console.runtime.settings
    known = await console.agents.get(name)
    if known is not None:
        now = datetime.now(UTC)
        wait = login_wait(known, lockout_after=settings.login_lockout_after, now=now)
        if wait is None:
            log.warning("console sign-in refused: agent %s is locked out", name)
            error = "このアカウントはロックされています。管理者に解除を依頼してください。"
            return sign_in_page(request, error=error, status_code=403)
        if wait > 0:
            return _slow_down(request, math.ceil(wait))
    agent = await check_password(console.agents, name, password)
    if agent is None:
        if known is not None:
            await console.agents.login_failed(name)
        return sign_in_page(request, error="名前かパスワードが違います。", status_code=401)
    # A new session (and CSRF token) on sign-in: nothing from before carries over.
    session_id = secrets.token_urlsafe(32)
    await console.agents.start_session(agent.name, session_id, hours=SESSION_HOURS)
    request.session.clear()
    request.session["agent"] = agent.name
    request.session["sid"] = session_id
    csrf_token(request)
    return RedirectResponse("/console", status_code=303)


def sign_in_page(request: Request, *, error: str = "", status_code: int = 200) -> Response:
    return render(request, "login.html", {"error": error}, status_code=status_code)


def _slow_down(request: Request, seconds: int) -> Response:
    error = f"試行が多すぎます。{seconds}秒ほど待ってからもう一度お試しください。"
    page = sign_in_page(request, error=error, status_code=429)
    page.headers["Retry-After"] = str(seconds)
    return page


@router.post("/logout", dependencies=changes)
async def logout(request: Request) -> Response:
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        await _console(request).agents.end_session(session_id)
    request.session.clear()
    return RedirectResponse("/console/login", status_code=303)


# ---------------------------------------------------------------- pages


Show = Literal["all", "mine", "waiting"]


@router.get("", response_class=HTMLResponse)
async def queue_page(
    request: Request, agent: SessionAgent, show: Annotated[Show, Query()] = "all"
) -> Response:
    """The open requests, longest waiting first; `show` narrows to mine or the unclaimed."""
    views = await queue_views(_console(request).runtime.desk.handoffs, agent.name)
    return render(request, "queue.html", {"me": agent, "handoffs": views, "show": show})


async def queue_views(handoffs: HandoffStore, agent: str) -> list[HandoffView]:
    """The queue as `agent` sees it: each request with the user's last words and whether
    this agent has read them."""
    found = await handoffs.queue()
    previews = await handoffs.previews([h.id for h in found], agent=agent)
    return [handoff_view(h, previews.get(h.id)) for h in found]


@router.get("/handoffs/{handoff_id}", response_class=HTMLResponse)
async def handoff_page(request: Request, handoff_id: HandoffId, agent: SessionAgent) -> Response:
    runtime = _console(request).runtime
    try:
        handoff = await runtime.desk.handoffs.get(handoff_id)
    except UnknownHandoff as error:
        raise HTTPException(status_code=404, detail="no such handoff") from error
    transcript = await runtime.store.transcript(handoff.conversation_id, limit=500)
    changes_ = await runtime.desk.handoffs.mode_changes(handoff.conversation_id)
    detail = detail_view(handoff, transcript, changes_)
    if transcript:  # opening the request reads it (the queue's unread marker)
        await runtime.desk.handoffs.mark_read(
            handoff_id, agent=agent.name, message_id=transcript[-1].id
        )
    canned = []
    if runtime.desk.canned is not None:
        values = canned_values(handoff, _ref(agent), agency=runtime.desk.agency)
        for reply in await runtime.desk.canned.all():
            text, missing = fill(reply.body, values)
            said = "、".join(VARIABLES.get(m, m) for m in missing)
            canned.append({"name": reply.name, "text": text, "missing": said})
    return render(
        request,
        "handoff.html",
        {
            "me": agent,
            "h": detail,
            "last_id": max((line.id for line in detail.transcript), default=0),
            "outcomes": [(o.value, o.label) for o in HandoffOutcome],
            "canned": canned,
        },
    )


# ---------------------------------------------------------------- actions


@router.post("/handoffs/{handoff_id}/claim", dependencies=changes)
async def claim(request: Request, handoff_id: HandoffId, agent: SessionAgent) -> Response:
    try:
        handoff = await _console(request).runtime.desk.claim(handoff_id, _ref(agent))
    except HandoffError as error:
        return _failed(request, handoff_id, error)
    return _done(request, handoff_id, "対応を開始しました。", handoff=handoff)


@router.post("/handoffs/{handoff_id}/messages", dependencies=changes)
async def send(
    request: Request,
    handoff_id: HandoffId,
    agent: SessionAgent,
    text: Text,
    kind: Annotated[Literal["reply", "note"], Form()] = "reply",
) -> Response:
    text = text.strip()
    if not text:
        return _done(request, handoff_id, "空のメッセージは送れません。", ok=False, status=422)
    desk = _console(request).runtime.desk
    try:
        if kind == "note":
            await desk.note(handoff_id, _ref(agent), text)
            return _done(request, handoff_id, "メモを残しました。")
        await desk.reply(handoff_id, _ref(agent), text)
    except (HandoffError, DeliveryFailed) as error:
        return _failed(request, handoff_id, error)
    return _done(request, handoff_id, "送信しました。")


@router.post("/handoffs/{handoff_id}/release", dependencies=changes)
async def release(
    request: Request,
    handoff_id: HandoffId,
    agent: SessionAgent,
    outcome: Annotated[HandoffOutcome, Form()],
) -> Response:
    """Hand back with how it ended (the form makes the agent pick one)."""
    try:
        handoff, _ = await _console(request).runtime.desk.release(
            handoff_id, _ref(agent), outcome=outcome
        )
    except HandoffError as error:
        return _failed(request, handoff_id, error)
    # The page shows the released state at once from this, not on the next feed event.
    return _done(
        request,
        handoff_id,
        f"ボットに戻しました（{outcome.label}）。ボットが会話を再開しています。",
        handoff=handoff,
    )


# ---------------------------------------------------------------- private


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _ref(agent: Agent) -> AgentRef:
    return AgentRef(id=agent.name, name=agent.display_name, via="console")


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """A console page, with the CSRF token, the flash message and the security headers."""
    template = _console(request).templates.get_template(name)
    flash = request.session.pop("flash", None)
    html = template.render(**context, csrf=csrf_token(request), flash=flash)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _done(
    request: Request,
    handoff_id: int,
    message: str,
    *,
    ok: bool = True,
    status: int = 200,
    handoff: Handoff | None = None,
) -> Response:
    if _wants_json(request):
        answer: dict[str, Any] = {"ok": ok, "message": message}
        if handoff is not None:
            answer["handoff"] = handoff_view(handoff).model_dump(mode="json")
        return JSONResponse(answer, status_code=status)
    request.session["flash"] = message
    return RedirectResponse(f"/console/handoffs/{handoff_id}", status_code=303)


def _failed(request: Request, handoff_id: int, error: HandoffError | DeliveryFailed) -> Response:
    if isinstance(error, UnknownHandoff):
        raise HTTPException(status_code=404, detail="no such handoff") from error
    message, status = _explain(error)
    return _done(request, handoff_id, message, ok=False, status=status)


def _explain(error: HandoffError | DeliveryFailed) -> tuple[str, int]:
    """An error as an agent reads it, and its HTTP status (`bot.http.errors`)."""
    status = http_error(error).status
    if isinstance(error, AlreadyClaimed):
        return f"{error.agent_name or error.agent}さんが対応中です。", status
    if isinstance(error, NotHolder):
        return (
            "この会話を担当していないため、できません。先に「対応する」を押してください。",
            status,
        )
    if isinstance(error, HandoffClosed):
        return "この依頼はすでに終わっています。", status
    if isinstance(error, DeliveryFailed):
        return (
            "記録はしましたが、ユーザーへの送信に失敗しました。少し待って送り直してください。",
            status,
        )
    return "できませんでした。", status
