"""GET /bookings/{token}.ics: a booking's calendar file, at a URL only its user was given
(the token is 128 random bits; anything else is 404, the same as a cancelled-and-purged one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response

from bot.errors import UnknownBooking

if TYPE_CHECKING:
    from bot.wiring import Runtime

router = APIRouter(include_in_schema=False)

Token = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")]


@router.get("/bookings/{token}.ics")
async def booking_ics(request: Request, token: Token) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        body = await runtime.booking.ics(token)
    except UnknownBooking as error:
        raise HTTPException(status_code=404, detail="no such booking") from error
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="booking.ics"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
