"""The flow's follow-ups when their timers fire: sent only to users who still want them (the
flow's `if`, e.g. the opt-in), never in quiet hours (they wait for the morning), and not to
users who left, are with an agent, or have a booking pending."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from bot.core.quiet_hours import QuietHours
from bot.core.timers import Postpone, Skip, TimerAction, Visit
from bot.engine import Engine
from bot.models import FollowUpIn, Mode, Status
from bot.records import Timer
from bot.store import StoredConversation

BookingPending = Callable[[int], Awaitable[bool]]
"""Whether the conversation (by id) has a booking still to come."""


class FollowUpHandler:
    """The `followup` timers' handler (registered in bot/wiring.py)."""

    def __init__(
        self,
        *,
        engines: Mapping[str, Engine],
        quiet: QuietHours,
        booking_pending: BookingPending | None = None,
    ) -> None:
        self.engines = engines
        self.quiet = quiet
        self.booking_pending = booking_pending

    async def __call__(
        self, timer: Timer, conversation: StoredConversation | None, now: datetime
    ) -> TimerAction:
        if conversation is None:
            return Skip("no conversation")
        if conversation.state.status is Status.INACTIVE:
            return Skip("user left")
        if conversation.mode is not Mode.BOT:
            return Skip("with an agent")
        engine = self.engines.get(conversation.state.flow)
        name = str(timer.payload.get("followup", ""))
        followup = engine.spec.followup(name) if engine is not None else None
        if engine is None or followup is None:
            return Skip("not in the flow any more")
        if not engine.holds(conversation.state, followup.if_):
            return Skip("not wanted")  # e.g. 配信停止 since it was scheduled
        if self.booking_pending is not None and await self.booking_pending(conversation.id):
            return Skip("booking pending")
        morning = self.quiet.ends(now)
        if morning is not None:
            return Postpone(morning)
        return Visit(FollowUpIn(followup=name))
