"""Bookings and availability for agents: the console page (/console/bookings: a day's
bookings per agent, one's own hours and exceptions) and the same through the agent API
(/api/v1/availability, /api/v1/bookings)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from bot.booking.slots import describe_rule, parse_rule
from bot.errors import BadInput, BotError, UnknownBooking
from bot.http.console.auth import SessionAgent, TokenAgent, check_csrf, session_agent, token_agent
from bot.http.console.pages import render
from bot.http.errors import Problem, http_error, refuse_unknown_query, responses
from bot.records import Booking, Rule

if TYPE_CHECKING:
    from bot.core.booking import BookingDesk
    from bot.wiring import Runtime

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
BookingId = Annotated[int, Path(ge=1, le=2**63 - 1)]

api = APIRouter(
    prefix="/api/v1",
    tags=["bookings"],
    dependencies=[Depends(token_agent), Depends(refuse_unknown_query)],
    responses=responses(401, 422, 429, 503),
)
page = APIRouter(prefix="/console", include_in_schema=False, dependencies=[Depends(session_agent)])


Clock = Annotated[
    str,
    Field(
        pattern=r"^([01][0-9]|2[0-2]):[0-5][0-9]$",
        description="HH:MM local time (BOOKING_ZONE), 00:00 to 22:59",
        examples=["18:00"],
    ),
]


def _number(value: object) -> object:
    """A JSON number, as documented: 60 and 60.0 are the same integer; "60" and true are not."""
    if isinstance(value, bool | str):
        raise ValueError("a number of minutes")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Minutes = Annotated[
    int,
    Field(ge=1, le=1440, description="How long; the window ends at 23:59 at the latest."),
    BeforeValidator(_number),
]
# A date as JSON carries it: a YYYY-MM-DD string (pydantic alone would also read 0 as 1970-01-01).
Day = Annotated[
    str,
    Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", json_schema_extra={"format": "date"}),
    AfterValidator(date.fromisoformat),
]


class WeeklyIn(BaseModel):
    kind: Literal["weekly"]
    day: Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    start: Clock
    minutes: Minutes


class ExtraIn(BaseModel):
    kind: Literal["extra"]
    day: Day
    start: Clock
    minutes: Minutes


class OffIn(BaseModel):
    kind: Literal["off"]
    day: Day
    start: Clock | None = Field(default=None, description="Absent: the whole day.")
    minutes: Minutes | None = Field(default=None, description="Absent: until the end of the day.")


RuleIn = Annotated[WeeklyIn | ExtraIn | OffIn, Field(discriminator="kind")]


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
    contact: str | None = Field(
        description="How to reach the user: 電話 …, メール …, このチャットで"
    )


# ---------------------------------------------------------------- agent API


@api.get("/availability", response_model=list[RuleOut])
async def list_rules(request: Request, agent: TokenAgent) -> list[RuleOut]:
    """Your weekly hours and exceptions."""
    rows = await _desk(request).bookings.rule_rows(agent.name)
    return [_rule_out(rule_id, rule) for rule_id, rule in rows]


@api.post("/availability", response_model=RuleOut, status_code=201, responses=responses(400, 413))
async def add_rule(request: Request, body: RuleIn, agent: TokenAgent) -> RuleOut:
    """Add weekly hours (`{"kind": "weekly", "day": "Tue", "start": "18:00", "minutes": 180}`),
    extra hours on a day, or time off (`{"kind": "off", "day": "2026-12-24"}`)."""
    rule = _rule_of(agent.id, body)
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
        str | None,
        Query(
            pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            description="Local day (BOOKING_ZONE), YYYY-MM-DD; default today",
            json_schema_extra={"format": "date"},
        ),
    ] = None,
    days: Annotated[int, Query(ge=1, le=90)] = 1,
) -> list[BookingOut]:
    """Every agent's bookings starting on `day` (and the `days` after), cancelled ones
    included, earliest first."""
    desk = _desk(request)
    try:
        on = date.fromisoformat(day) if day else None
    except ValueError as error:
        problem = Problem(error="invalid", message=f"day {day!r} is no date")
        raise HTTPException(
            status_code=422, detail=problem.model_dump(exclude_none=True)
        ) from error
    return [_booking_out(desk, b) for b in await _bookings(desk, on, days)]


@api.post("/bookings/{booking_id}/cancel", response_model=BookingOut, responses=responses(404))
async def cancel_booking(request: Request, booking_id: BookingId) -> BookingOut:
    """Cancel a booking: the user is told in their chat; the Slack card and the reminders
    follow. 404 when it is not open."""
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
    shown = await _bookings(desk, day, 1)
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
    return _back(request, "予約をキャンセルしました。ユーザーにもお知らせしています。", day=day)


# ---------------------------------------------------------------- private


async def _bookings(desk: BookingDesk, day: date | None, days: int) -> list[Booking]:
    zone = desk.policy.zone
    local_day = day or datetime.now(UTC).astimezone(zone).date()
    since = datetime.combine(local_day, datetime.min.time(), tzinfo=zone)
    return await desk.bookings.between(since, since + timedelta(days=days))


def _desk(request: Request) -> BookingDesk:
    runtime: Runtime = request.app.state.runtime
    return runtime.booking


def _rule_of(agent_id: int, body: WeeklyIn | ExtraIn | OffIn) -> Rule:
    """The API's rule as the store keeps it; every valid body makes a valid rule (the start
    is before 23:00 and the end is clipped to 23:59)."""
    start = end = None
    if body.start is not None:
        start = time.fromisoformat(body.start)
        begun = datetime.combine(date.min, start)
        minutes = body.minutes if body.minutes is not None else 1440
        end = min((begun + timedelta(minutes=minutes)).time(), time(23, 59))
        if end <= start:  # past midnight: the window ends at the end of the day
            end = time(23, 59)
    if isinstance(body, WeeklyIn):
        weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun").index(body.day)
        return Rule(agent_id=agent_id, kind="weekly", weekday=weekday, start=start, end=end)
    on = date.fromisoformat(body.day) if isinstance(body.day, str) else body.day
    return Rule(agent_id=agent_id, kind=body.kind, day=on, start=start, end=end)


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
        contact=booking.contact,
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
