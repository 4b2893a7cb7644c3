"""Console pages for saved replies (admins keep them; every agent reads them) and the
history of finished requests (searchable by date, agent and outcome)."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Final, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bot.handoff.canned import MAX_BODY, NAME_PATTERN, VARIABLES, unknown_variables
from bot.http.console.auth import SessionAgent, check_csrf, session_agent
from bot.http.console.pages import render
from bot.http.console.views import handoff_view
from bot.storable_text import require_storable
from bot.store import Agent, CannedReplyStore, HandoffOutcome

if TYPE_CHECKING:
    from bot.http.console import Console

HISTORY_LIMIT: Final = 200

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(session_agent)]
)
changes = [Depends(check_csrf)]


# ---------------------------------------------------------------- saved replies


@router.get("/replies", response_class=HTMLResponse)
async def replies_page(request: Request, agent: SessionAgent) -> Response:
    return await _replies(request, agent)


@router.post("/replies", dependencies=changes)
async def save_reply(
    request: Request,
    agent: SessionAgent,
    name: Annotated[str, Form(max_length=200)],
    body: Annotated[str, Form(max_length=MAX_BODY * 2)],
) -> Response:
    """Add a saved reply, or replace the one with this keyword (admins only)."""
    _admin_only(agent.admin)
    name, body = name.strip(), body.strip()
    error = _problem(name, body)
    if error:
        return await _replies(request, agent, error=error, draft={"name": name, "body": body})
    await _canned(request).save(name, body, by=agent.name)
    request.session["flash"] = f"定型文「{name}」を保存しました。"
    return RedirectResponse("/console/replies", status_code=303)


@router.post("/replies/delete", dependencies=changes)
async def delete_reply(
    request: Request, agent: SessionAgent, name: Annotated[str, Form(max_length=200)]
) -> Response:
    _admin_only(agent.admin)
    deleted = await _canned(request).delete(name.strip())
    request.session["flash"] = (
        f"定型文「{name}」を削除しました。" if deleted else f"定型文「{name}」はありません。"
    )
    return RedirectResponse("/console/replies", status_code=303)


# ---------------------------------------------------------------- history


@router.get("/history", response_class=HTMLResponse)
async def history_page(
    request: Request,
    agent: SessionAgent,
    since: Annotated[str, Query(max_length=10, description="YYYY-MM-DD or empty")] = "",
    until: Annotated[str, Query(max_length=10, description="YYYY-MM-DD or empty")] = "",
    who: Annotated[str, Query(max_length=255)] = "",
    outcome: Annotated[
        Literal["", "none", "booked", "info_only", "declined", "follow_up"], Query()
    ] = "",
) -> Response:
    """Released and cancelled requests, newest first; dates are the agents' own (AGENT_HOURS)."""
    console = _console(request)
    desk = console.runtime.desk
    zone = desk.hours.zone
    first, last = _day(since), _day(until)  # the search form sends empty dates as ""
    found = await desk.handoffs.history(
        since=datetime.combine(first, time(), tzinfo=zone) if first else None,
        until=datetime.combine(last + timedelta(days=1), time(), tzinfo=zone) if last else None,
        agent=who or None,
        outcome=_outcome(outcome),
        limit=HISTORY_LIMIT,
    )
    return render(
        request,
        "history.html",
        {
            "me": agent,
            "handoffs": [handoff_view(h) for h in found],
            "agents": await desk.handoffs.agents_seen(),
            "outcomes": [(o.value, o.label) for o in HandoffOutcome],
            "query": {
                "since": first.isoformat() if first else "",
                "until": last.isoformat() if last else "",
                "who": who,
                "outcome": outcome,
            },
            "limit": HISTORY_LIMIT,
        },
    )


# ---------------------------------------------------------------- private


async def _replies(
    request: Request, agent: Agent, *, error: str = "", draft: dict[str, str] | None = None
) -> Response:
    return render(
        request,
        "replies.html",
        {
            "me": agent,
            "replies": await _canned(request).all(),
            "variables": VARIABLES,
            "error": error,
            "draft": draft or {"name": "", "body": ""},
        },
        status_code=422 if error else 200,
    )


def _problem(name: str, body: str) -> str:
    """Why the reply cannot be saved, in the admin's words; "" if it can."""
    if not re.fullmatch(NAME_PATTERN, name):
        return "名前は空白や ! / { } を含まない32文字までの一語にしてください（Slackでは「!名前」で呼び出します）。"
    if not body:
        return "本文を入れてください。"
    if len(body) > MAX_BODY:
        return f"本文は{MAX_BODY}文字までです（いま{len(body)}文字）。"
    try:
        require_storable(body)
        require_storable(name)
    except ValueError:
        return "使えない文字が含まれています。"
    unknown = unknown_variables(body)
    if unknown:
        known = "、".join(f"{{{{{v}}}}}" for v in VARIABLES)
        return f"使えない変数があります: {'、'.join(unknown)}。使えるのは {known} です。"
    return ""


def _day(value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise HTTPException(status_code=422, detail="dates are YYYY-MM-DD") from error


def _outcome(value: str) -> HandoffOutcome | Literal["none"] | None:
    if value == "none":
        return "none"
    return HandoffOutcome(value) if value else None


def _admin_only(admin: bool) -> None:
    if not admin:
        raise HTTPException(status_code=403, detail="only admin agents may change saved replies")


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _canned(request: Request) -> CannedReplyStore:
    canned = _console(request).runtime.desk.canned
    if canned is None:  # the wiring always gives the desk one; a bare test desk may not
        raise HTTPException(status_code=503, detail="saved replies are not available")
    return canned
