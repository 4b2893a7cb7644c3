"""Running durable timers: each due timer goes to the handler of its kind, and what the
handler decides happens exactly once, whatever crashes or restarts.

A timer is a row in the store (`bot.store.timers`), never a task in memory: the background
jobs (one process at a time, under the `job:background` lease) look for due ones, ask the
handler registered for the kind (bot/wiring.py) what to do, and do it. Messages are written
with the timer's mark in one transaction (transcript, outbox) and delivered by the outbox like
every reply: in the conversation's order, retried, exactly once. A timer whose turn lost a race
(settled, cancelled or rescheduled meanwhile) writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from pydantic import TypeAdapter

from bot.core.clock import Clock
from bot.core.leases import LeaseKeeper, conversation_lease
from bot.core.outbox import Outbox
from bot.core.quiet_hours import QuietHours
from bot.core.service import ConversationService
from bot.errors import StoreError
from bot.metrics import Metrics
from bot.models import ChoiceIn, FollowUpIn, Message, Outbound, StartIn, Status, TextIn
from bot.records import Timer
from bot.store import SqlStore, StoredConversation, TimerGone, UnknownConversation

log = logging.getLogger(__name__)

GIVE_UP_AFTER: Final = 5
"""A timer whose handler failed this many times is settled as failed."""
RETRY_FIRST: Final = 60.0
"""Seconds before a failed timer is tried again; doubled each time, up to RETRY_MOST."""
RETRY_MOST: Final = 3600.0
BATCH: Final = 100
"""Due timers taken per pass (the next pass takes the rest at once)."""
_OUTBOUND: Final = TypeAdapter(Outbound)


# ---------------------------------------------------------------- what a handler decides


@dataclass(frozen=True, slots=True)
class Say:
    """Send these messages to the timer's conversation; its state does not change."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Visit:
    """Run a turn of the timer's conversation with this event (e.g. the flow's follow-up)."""

    event: TextIn | ChoiceIn | StartIn | FollowUpIn


@dataclass(frozen=True, slots=True)
class Skip:
    """Settle the timer without a word (`reason` is kept as its outcome)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Postpone:
    """Not now: the timer is due again at `until` (e.g. after quiet hours)."""

    until: datetime


TimerAction = Say | Visit | Skip | Postpone


class TimerHandler(Protocol):
    """Decides what a due timer of one kind does. `conversation` is the timer's (None when
    it has none, or it is gone); `now` is the runner's clock."""

    async def __call__(
        self, timer: Timer, conversation: StoredConversation | None, now: datetime
    ) -> TimerAction: ...


# ---------------------------------------------------------------- the runner


class TimerRunner:
    """Fires due timers through their kinds' handlers (one pass per `run_due`)."""

    def __init__(
        self,
        *,
        store: SqlStore,
        service: ConversationService,
        outbox: Outbox,
        clock: Clock,
        handlers: Mapping[str, TimerHandler],
        metrics: Metrics,
        leases: LeaseKeeper | None = None,
    ) -> None:
        """`leases`: several workers share the database; a timer's turn is run only while
        this process holds its conversation's lease (as the inbox runs events), else later."""
        self.store = store
        self.service = service
        self.outbox = outbox
        self.clock = clock
        self.handlers = dict(handlers)
        self.metrics = metrics
        self.leases = leases

    async def run_due(self) -> int:
        """Fire every timer due now; how many were settled or postponed (a timer whose
        conversation another process holds waits for the next pass)."""
        done = 0
        while True:
            due = await self.store.due_timers(self.clock.now(), limit=BATCH)
            progressed = 0
            for timer in due:
                if await self._fire(timer):
                    progressed += 1
            done += progressed
            if len(due) < BATCH or progressed == 0:
                return done

    async def pause(self, most: float) -> float:
        """Seconds until the next timer is due, at most `most` (timers scheduled by other
        processes are found within that)."""
        due = await self.store.next_due()
        if due is None:
            return most
        return min(most, max((due - self.clock.now()).total_seconds(), 0.05))

    async def _fire(self, timer: Timer) -> bool:
        conversation = (
            await self.store.load_by_id(timer.conversation_id)
            if timer.conversation_id is not None
            else None
        )
        lease = (
            conversation_lease(conversation.key.channel, conversation.key.address)
            if conversation is not None and self.leases is not None
            else None
        )
        if (
            lease is not None
            and self.leases is not None
            and lease not in await self.leases.acquire([lease])
        ):
            return False  # another worker runs this conversation now: next pass
        try:
            return await self._decide_and_act(timer, conversation)
        finally:
            if lease is not None and self.leases is not None:
                await self.leases.release([lease])

    async def _decide_and_act(self, timer: Timer, conversation: StoredConversation | None) -> bool:
        handler = self.handlers.get(timer.kind)
        if handler is None:
            log.error("timer %s: no handler for kind %r; settled as failed", timer.id, timer.kind)
            await self._settle(timer, "failed: no handler")
            return True
        try:
            action = await handler(timer, conversation, self.clock.now())
            match action:
                case Skip(reason=reason):
                    await self._settle(timer, f"skipped: {reason}")
                case Postpone(until=until):
                    if await self.store.postpone_timer(timer, until):
                        self._count(timer, "postponed")
                case Say(messages=messages) if conversation is not None:
                    reply = await self.service.announce(conversation.key, messages, timer=timer)
                    self._count(timer, "sent")
                    await self.outbox.deliver_now(reply, conversation.key)
                case Visit(event=event) if conversation is not None:
                    key = conversation.key
                    reply = await self.service.handle(
                        key,
                        event,
                        outbox=reply_by_outbox(key.channel.value),
                        existing_only=True,
                        timer=timer,
                    )
                    self._count(timer, "sent")
                    await self.outbox.deliver_now(reply, key)
                case _:
                    await self._settle(timer, "skipped: no conversation")
        except (TimerGone, UnknownConversation):
            pass  # settled, cancelled or rescheduled by someone else; or the user is gone
        except Exception as error:
            await self._failed(timer, error)
        return True

    async def _settle(self, timer: Timer, outcome: str) -> None:
        if await self.store.settle_timer(timer, outcome):
            self._count(timer, outcome.split(":", 1)[0])

    async def _failed(self, timer: Timer, error: Exception) -> None:
        attempts = timer.attempts + 1
        give_up = attempts >= GIVE_UP_AFTER
        log.log(
            logging.ERROR if give_up else logging.WARNING,
            "timer %s (%s) failed%s: %s",
            timer.id,
            timer.kind,
            " for good" if give_up else ", will retry",
            type(error).__name__,
            exc_info=not isinstance(error, StoreError),
        )
        pause = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_MOST)
        retry_at = None if give_up else self.clock.now() + timedelta(seconds=pause)
        try:
            await self.store.timer_failed(
                timer, f"{type(error).__name__}: {error}", retry_at=retry_at
            )
        except StoreError:
            log.warning("timer %s: the failure was not recorded; it is tried again", timer.id)
        if give_up:
            self._count(timer, "failed")

    def _count(self, timer: Timer, outcome: str) -> None:
        self.metrics.timers_fired.labels(kind=timer.kind, outcome=outcome).inc()


def reply_by_outbox(channel: str) -> bool:
    """LINE and Slack replies go through the outbox; the web chat reads its transcript."""
    return channel not in ("web", "cli")


# ---------------------------------------------------------------- a generic kind


SAY: Final = "say"
"""The kind of timers whose payload is the messages to send: {"messages": [...]}, each an
outbound message as the models dump it ({"type": "text", "text": "..."}); with
"quiet_hours": true they wait for the end of QUIET_HOURS."""


class SayHandler:
    """Sends a `say` timer's messages, unless the user left (LINE unfollow)."""

    def __init__(self, *, quiet: QuietHours | None = None) -> None:
        self.quiet = quiet

    async def __call__(
        self, timer: Timer, conversation: StoredConversation | None, now: datetime
    ) -> TimerAction:
        if conversation is None:
            return Skip("no conversation")
        if conversation.state.status is Status.INACTIVE:
            return Skip("user left")
        messages = tuple(_parse(item) for item in timer.payload.get("messages", ()))
        if not messages:
            return Skip("nothing to say")
        if timer.payload.get("quiet_hours") and self.quiet is not None:
            morning = self.quiet.ends(now)
            if morning is not None:
                return Postpone(morning)
        return Say(messages)


def _parse(item: object) -> Message:
    parsed: Message = _OUTBOUND.validate_python(item)
    return parsed


async def schedule_say(
    store: SqlStore,
    key: str,
    *,
    conversation_id: int,
    due_at: datetime,
    messages: Sequence[Message],
    quiet_hours: bool = False,
) -> Timer:
    """Arm a `say` timer: these messages to the conversation at `due_at` (the same `key`
    again replaces it); `quiet_hours`: not pushed during QUIET_HOURS (they wait for the end)."""
    if not messages:
        raise ValueError("a say timer needs at least one message")
    payload: dict[str, Any] = {"messages": [m.model_dump(mode="json") for m in messages]}
    if quiet_hours:
        payload["quiet_hours"] = True
    return await store.schedule_timer(
        key, kind=SAY, conversation_id=conversation_id, due_at=due_at, payload=payload
    )
