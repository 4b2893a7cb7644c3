"""Bookings and availability for agents: the console page (/console/bookings: a day's
bookings per agent, one's own hours and exceptions) and the same through the agent API
(/api/v1/availability, /api/v1/bookings)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from bot.booking.slots import describe_rule, parse_rule
from bot.errors import BadInput, BotError, UnknownAgent, UnknownBooking
from bot.http.console.auth import SessionAgent, TokenAgent, check_csrf, session_agent, token_agent
from bot.http.console.pages import render
from bot.http.errors import Problem, http_error, responses
from bot.records import Booking, Rule

if TYPE_CHECKING:
    from bot.core.booking import BookingDesk
    from bot.wiring import Runtime

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
BookingId = Annotated[int, Path(ge=1, le=2**63 - 1)]

api = APIRouter(
    prefix="/api/v1",
    tags=["bookings"],
    dependencies=[Depends(token_agent)],
    responses=responses(401, 422, 429, 503),
)
page = APIRouter(prefix="/console", include_in_schema=False, dependencies=[Depends(session_agent)])


class RuleIn(BaseModel):
    kind: Literal["weekly", "extra", "off"] = Field(
        description="weekly hours, extra hours on a day, or time off on a day"
    )
    day: str = Field(description="weekly: Mon..Sun; extra and off: YYYY-MM-DD", max_length=16)
    hours: str = Field(
        default="", description="HH:MM-HH:MM; empty for a whole day off", max_length=16
    )


class RuleOut(BaseModel):
    id: int
    kind: str
    weekday: int | None
    day: date | None
    start: str | None
    end: str | None
    label: str


class BookingOut(BaseModel):
    id: int
    status: str
    agent: str
    starts_at: datetime
    ends_at: datetime
    when: str
    channel: str
    contact_name: str | None


# ---------------------------------------------------------------- agent API


@api.get("/availability", response_model=list[RuleOut])
async def list_rules(request: Request, agent: TokenAgent) -> list[RuleOut]:
    """Your weekly hours and exceptions."""
    rows = await _desk(request).bookings.rule_rows(agent.name)
    return [_rule_out(rule_id, rule) for rule_id, rule in rows]


@api.post("/availability", response_model=RuleOut, status_code=201, responses=responses(400))
async def add_rule(request: Request, body: RuleIn, agent: TokenAgent) -> RuleOut:
    """Add weekly hours (`{"kind": "weekly", "day": "Tue", "hours": "18:00-21:00"}`), extra
    hours on a day, or time off (`{"kind": "off", "day": "2026-12-24"}`)."""
    try:
        rule = parse_rule(agent.id, body.kind, body.day, body.hours)
    except BadInput as error:
        raise _http(error) from error
    rule_id = await _desk(request).bookings.add_rule(agent.name, rule)
    return _rule_out(rule_id, rule)


@api.delete("/availability/{rule_id}", status_code=204, responses=responses(404))
async def remove_rule(request: Request, rule_id: RuleId, agent: TokenAgent) -> Response:
    if not await _desk(request).bookings.remove_rule(agent.name, rule_id):
        raise _http(BadInput("no such rule of yours"), status=404)
    return Response(status_code=204)


@api.get("/bookings", response_model=list[BookingOut])
async def list_bookings(
    request: Request,
    day: Annotated[
        date | None, Query(description="Local day (BOOKING_ZONE); default today")
    ] = None,
    days: Annotated[int, Query(ge=1, le=90)] = 1,
    agent: Annotated[str | None, Query(max_length=64)] = None,
) -> list[BookingOut]:
    """Bookings starting on `day` (and the `days` after), cancelled ones included."""
    desk = _desk(request)
    return [_booking_out(desk, b) for b in await _bookings(desk, day, days, agent)]


@api.post("/bookings/{booking_id}/cancel", response_model=BookingOut, responses=responses(404))
async def cancel_booking(request: Request, booking_id: BookingId) -> BookingOut:
    """Cancel a booking (the Slack card shows it; tell the user yourself)."""
    desk = _desk(request)
    try:
        booking = await desk.cancel(booking_id)
    except UnknownBooking as error:
        raise _http(error) from error
    return _booking_out(desk, booking)


# ---------------------------------------------------------------- console page


@page.get("/bookings")
async def bookings_page(
    request: Request, agent: SessionAgent, day: Annotated[date | None, Query()] = None
) -> Response:
    desk = _desk(request)
    shown = await _bookings(desk, day, 1, None)
    local_day = day or datetime.now(UTC).astimezone(desk.policy.zone).date()
    by_agent: dict[str, list[BookingOut]] = {}
    for booking in shown:
        by_agent.setdefault(booking.agent_name, []).append(_booking_out(desk, booking))
    rules = await desk.bookings.rule_rows(agent.name)
    return render(
        request,
        "bookings.html",
        {
            "me": agent,
            "day": local_day,
            "previous": local_day - timedelta(days=1),
            "next": local_day + timedelta(days=1),
            "by_agent": by_agent,
            "rules": [_rule_out(rule_id, rule) for rule_id, rule in rules],
        },
    )


@page.post("/availability", dependencies=[Depends(check_csrf)])
async def add_rule_form(
    request: Request,
    agent: SessionAgent,
    kind: Annotated[Literal["weekly", "extra", "off"], Form()],
    day: Annotated[str, Form(max_length=16)],
    hours: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    try:
        rule = parse_rule(agent.id, kind, day, hours)
    except BadInput:
        return _back(
            request,
            "入力を確かめてください（曜日は Mon〜Sun、日付は 2026-12-24、時間は 18:00-21:00）。",
        )
    await _desk(request).bookings.add_rule(agent.name, rule)
    return _back(request, f"{describe_rule(rule)} を追加しました。")


@page.post("/availability/{rule_id}/delete", dependencies=[Depends(check_csrf)])
async def remove_rule_form(request: Request, rule_id: RuleId, agent: SessionAgent) -> Response:
    removed = await _desk(request).bookings.remove_rule(agent.name, rule_id)
    return _back(request, "削除しました。" if removed else "見つかりませんでした。")


@page.post("/bookings/{booking_id}/cancel", dependencies=[Depends(check_csrf)])
async def cancel_form(
    request: Request,
    booking_id: BookingId,
    agent: SessionAgent,
    day: Annotated[date | None, Form()] = None,
) -> Response:
    try:
        await _desk(request).cancel(booking_id)
    except UnknownBooking:
        return _back(request, "この予約はもうありません。", day=day)
    return _back(request, "予約をキャンセルしました。ユーザーへの連絡をお願いします。", day=day)


# ---------------------------------------------------------------- private


async def _bookings(
    desk: BookingDesk, day: date | None, days: int, agent: str | None
) -> list[Booking]:
    zone = desk.policy.zone
    local_day = day or datetime.now(UTC).astimezone(zone).date()
    since = datetime.combine(local_day, datetime.min.time(), tzinfo=zone)
    try:
        return await desk.bookings.between(since, since + timedelta(days=days), agent=agent)
    except UnknownAgent as error:
        raise _http(error, status=404) from error


def _desk(request: Request) -> BookingDesk:
    runtime: Runtime = request.app.state.runtime
    return runtime.booking


def _rule_out(rule_id: int, rule: Rule) -> RuleOut:
    return RuleOut(
        id=rule_id,
        kind=rule.kind,
        weekday=rule.weekday,
        day=rule.day,
        start=f"{rule.start:%H:%M}" if rule.start else None,
        end=f"{rule.end:%H:%M}" if rule.end else None,
        label=describe_rule(rule),
    )


def _booking_out(desk: BookingDesk, booking: Booking) -> BookingOut:
    return BookingOut(
        id=booking.id,
        status=booking.status,
        agent=booking.agent_name,
        starts_at=booking.starts_at,
        ends_at=booking.ends_at,
        when=desk.when(booking),
        channel=booking.key.channel.value,
        contact_name=booking.contact_name,
    )


def _back(request: Request, message: str, *, day: date | None = None) -> Response:
    """Back to the bookings page (of the day the agent was looking at)."""
    request.session["flash"] = message
    where = f"/console/bookings?day={day.isoformat()}" if day else "/console/bookings"
    return RedirectResponse(where, status_code=303)


def _http(error: BotError, *, status: int | None = None) -> HTTPException:
    answer = http_error(error)
    problem = Problem(
        error="not_found" if status == 404 else answer.code, message=str(error) or answer.message
    )
    return HTTPException(
        status_code=status or answer.status, detail=problem.model_dump(exclude_none=True)
    )
