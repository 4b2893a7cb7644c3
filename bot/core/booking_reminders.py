"""Booking reminders as durable timers: scheduled when a booking is made or moved (the day
before and an hour before, REMINDER_BEFORE_HOURS), cancelled with it, and said when due by
the timers' runner (the `booking_reminder` kind) in the flow's words (`booking.reminder`).

Timer keys are `booking_reminder:<booking id>:<hours>h`: scheduling again is the same timer,
and a booking's reminders are cancelled together by their prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from bot.core.booking import BookingDesk
from bot.core.clock import Clock
from bot.core.quiet_hours import QuietHours
from bot.core.timers import Postpone, Say, Skip, TimerAction, schedule_say
from bot.engine import Engine
from bot.errors import ConfigError, UnknownBooking
from bot.flows.expressions import render
from bot.models import Status, TextOut
from bot.records import Booking, Timer
from bot.store import SqlStore, StoredConversation

log = logging.getLogger(__name__)

REMINDER: Final = "booking_reminder"
"""The timer kind."""
SOON: Final = timedelta(hours=12)
"""A reminder closer than this to the booking is sent even in quiet hours (the user is
expecting it); an earlier one waits for the morning, if that is still before the booking."""


def parse_before(text: str) -> tuple[int, ...]:
    """REMINDER_BEFORE_HOURS `24,1` -> (24, 1); empty for none."""
    try:
        hours = tuple(sorted({int(part) for part in text.split(",") if part.strip()}, reverse=True))
    except ValueError as error:
        raise ConfigError(f"REMINDER_BEFORE_HOURS {text!r}: hours like 24,1") from error
    if any(h <= 0 or h > 24 * 14 for h in hours):
        raise ConfigError(f"REMINDER_BEFORE_HOURS {text!r}: each between 1 and 336 hours")
    return hours


class BookingReminders:
    """The booking desk's listener (schedules and cancels) and the timers' handler (says)."""

    def __init__(
        self,
        *,
        store: SqlStore,
        desk: BookingDesk,
        engines: Mapping[str, Engine],
        quiet: QuietHours,
        before: Sequence[int],
        clock: Clock,
    ) -> None:
        self.store = store
        self.desk = desk
        self.engines = engines
        self.quiet = quiet
        self.before = tuple(before)
        self.clock = clock

    # ------------------------------------------------------------ scheduling

    async def on_change(self, booking: Booking) -> None:
        """A booking was made, moved or cancelled: its reminders follow."""
        prefix = f"{REMINDER}:{booking.id}:"
        if booking.status != "booked":
            cancelled = await self.store.cancel_timers(prefix, now=self.clock.now())
            log.info("booking %d cancelled: %d reminder(s) cancelled", booking.id, cancelled)
            return
        now = self.clock.now()
        for hours in self.before:
            due = booking.starts_at - timedelta(hours=hours)
            if due <= now:
                continue  # booked too close for this one
            await self.store.schedule_timer(
                f"{prefix}{hours}h",
                kind=REMINDER,
                due_at=due,
                conversation_id=booking.conversation_id,
                payload={"booking_id": booking.id, "hours": hours},
                now=now,
            )

    async def cancelled_by_agent(self, booking: Booking) -> None:
        """Tell the user an agent cancelled their booking (a `say` timer due now: durable,
        and delivered by the outbox like any message)."""
        stored = await self.store.load_by_id(booking.conversation_id)
        engine = self.engines.get(stored.state.flow) if stored is not None else None
        texts = engine.spec.booking if engine is not None else None
        if engine is None or texts is None:
            return
        context = {"booking": self.desk.view(booking).model_dump(), "vars": engine.spec.vars}
        await schedule_say(
            self.store,
            f"booking_cancelled:{booking.id}",
            conversation_id=booking.conversation_id,
            due_at=self.clock.now(),
            messages=(TextOut(text=render(texts.cancelled_by_agent, context)),),
        )

    # ------------------------------------------------------------ the timers' handler

    async def __call__(
        self, timer: Timer, conversation: StoredConversation | None, now: datetime
    ) -> TimerAction:
        if conversation is None:
            return Skip("no conversation")
        if conversation.state.status is Status.INACTIVE:
            return Skip("user left")
        try:
            booking = await self.desk.bookings.get(int(timer.payload.get("booking_id", 0)))
        except UnknownBooking:
            return Skip("booking gone")
        if booking.status != "booked":
            return Skip("booking cancelled")
        if booking.starts_at <= now:
            return Skip("too late")
        morning = self.quiet.ends(now)
        if morning is not None and booking.starts_at - now > SOON and morning < booking.starts_at:
            return Postpone(morning)
        engine = self.engines.get(conversation.state.flow)
        texts = engine.spec.booking if engine is not None else None
        if engine is None or texts is None:
            return Skip("the flow has no booking texts")
        context = {
            "booking": self.desk.view(booking).model_dump(),
            "vars": engine.spec.vars,
            "soon": booking.starts_at - now <= SOON,
        }
        return Say((TextOut(text=render(texts.reminder, context)),))
