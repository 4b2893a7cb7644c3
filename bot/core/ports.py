"""The core's ports: what channel adapters implement (Sender, Courier, AgentSurface) and what
they are handed (Turns, Recorder, Deliveries, Conversations, AgentDesk), with the records that
cross them. Channels import this module and the leaf modules, nothing else of ours."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bot.errors import DeliveryFailed
from bot.models import (
    ConversationKey,
    Event,
    HandoffRequested,
    Message,
    Mode,
    StoredMessage,
)
from bot.records import Booking, Handoff, HandoffOutcome, InboxEvent, OutboxItem

__all__ = [
    "AgentDesk",
    "AgentRef",
    "AgentSurface",
    "Attempt",
    "Booking",
    "BookingSurface",
    "Conversations",
    "Courier",
    "Deliveries",
    "DeliveryFailed",
    "EventHandler",
    "Handled",
    "HandoffRefs",
    "InboxEvent",
    "OutboxItem",
    "Recorder",
    "Reply",
    "Sender",
    "Turns",
]


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Reply:
    """What one inbound event produced."""

    conversation_id: int
    messages: tuple[Message, ...]
    mode: Mode
    handoff: HandoffRequested | None = None
    outbox_id: int | None = None
    heard: str | None = None  # the user's words this turn, as kept in the transcript
    last_id: int = 0  # the newest transcript line the turn wrote (web chat polling)
    forgotten: bool = False  # the user's data was deleted: `messages` go out without an outbox


class Handled(StrEnum):
    """What an event handler did with a recorded event."""

    WITH_TURN = "with_turn"  # the turn's own transaction marked the event processed
    NOTHING_SAVED = "nothing_saved"  # nothing was saved: the inbox marks the event itself


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """How the outbox asks a courier to deliver an item.

    `first`: nobody has tried the item yet: the turn's own delivery, or a later round's of a
    reply that waited behind older ones in the process that saved it (a reply token, if any, is
    unused; the channel checks it is still fresh). `maybe_delivered`: an earlier try may have reached the user (cut short
    by a crash or a timeout): a channel that can tell (LINE: a spent reply token) must not
    deliver twice. `retry`: the courier may retry transient failures itself; False for the
    outbox's later rounds, which pace retries themselves."""

    first: bool
    maybe_delivered: bool = False
    retry: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRef:
    """Who acts: `id` is stable (agent name, or e.g. "slack:U0123"), `name` is shown to users."""

    id: str
    name: str
    via: str = ""  # the surface acting ("console", "api", "slack"): it need not echo itself


# ---------------------------------------------------------------- implemented by channels


EventHandler = Callable[[InboxEvent], Awaitable[Handled]]
"""Runs one recorded event of a channel (the inbox runs a user's events in order)."""


class Sender(Protocol):
    """Delivers messages to a user outside a turn's reply (agent replies, handoff notices).

    `idempotency_key` is stable for one logical message, so a retried send is never delivered
    twice; `sender_name` shows who speaks (e.g. the agent's name) where the channel can.
    Raises DeliveryFailed when the channel does not take them."""

    async def send(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None: ...


class Courier(Protocol):
    """Delivers one outbox item of its channel (`bot.core.outbox`). Raises DeliveryFailed:
    `retryable` keeps the item pending for another round, else it is given up;
    `maybe_delivered` says the failed try may have reached the user all the same."""

    async def deliver(
        self, item: OutboxItem, messages: Sequence[Message], attempt: Attempt
    ) -> None: ...


@runtime_checkable
class BookingSurface(Protocol):
    """An agent surface that shows bookings (the Slack agent channel's cards)."""

    surface_name: str

    async def booking_changed(self, booking: Booking, *, when: str) -> dict[str, Any] | None:
        """Show the booking as it is now (booked, moved or cancelled; `when` as users read
        it); returns where it shows (stored in `booking.refs[surface_name]` and passed back
        next time) or None when that did not change."""
        ...


class AgentSurface(Protocol):
    """Where agents see handoffs and act on them: the web console's live feed, and the Slack
    agent channel. The desk calls these after each move has been stored, in the background:
    a slow or failing surface never delays the user or another surface. Implementations
    should be idempotent per handoff id and move (a repair may repeat a call)."""

    async def notify_new(self, handoff: Handoff) -> None:
        """A handoff entered the queue (status waiting; `handoff.summary` is filled)."""
        ...

    async def user_message(self, handoff: Handoff, text: str) -> None:
        """The user wrote while waiting or while an agent holds the conversation."""
        ...

    async def agent_message(
        self, handoff: Handoff, message: StoredMessage, agent: AgentRef
    ) -> None:
        """An agent's reply (`message.sender == "agent"`, delivered to the user) or internal
        note (`"note"`, never shown to the user), from any surface (see `agent.via`)."""
        ...

    async def claimed(self, handoff: Handoff, agent: AgentRef) -> None:
        """`agent` took the handoff (status claimed)."""
        ...

    async def released(self, handoff: Handoff) -> None:
        """The agent handed back; the bot has resumed and said so to the user."""
        ...

    async def cancelled(self, handoff: Handoff) -> None:
        """The user went back to the bot before any agent came."""
        ...


# ---------------------------------------------------------------- handed to channels


class Turns(Protocol):
    """Runs a conversation's turn (`bot.core.service.ConversationService`)."""

    async def handle(
        self,
        key: ConversationKey,
        event: Event,
        *,
        outbox: bool = False,
        inbox_id: int | None = None,
        reply_token: str | None = None,
        event_at: datetime | None = None,
    ) -> Reply: ...


class Recorder(Protocol):
    """Records inbound events durably before they are acknowledged (`bot.core.inbox`)."""

    async def submit(
        self,
        *,
        channel: str,
        event_id: str,
        address: str,
        payload: dict[str, Any],
        occurred_at: datetime,
    ) -> bool: ...

    def serving(self) -> AbstractContextManager[None]:
        """Held while a webhook is being acknowledged: batches of turns give way to it."""
        ...

    def spawn(self, coro: Any) -> Any:
        """Run a background task, keeping a reference to it."""
        ...


class Deliveries(Protocol):
    """Delivers what turns saved in the outbox, in each conversation's order
    (`bot.core.outbox.Outbox`)."""

    async def deliver_now(
        self,
        reply: Reply,
        key: ConversationKey,
        messages: Sequence[Message] | None = None,
        *,
        reply_token: str | None = None,
        event_at: datetime | None = None,
    ) -> None:
        """The turn's reply, right after it is saved (`messages`: what is left to send, when
        the channel already showed part of it another way)."""
        ...


class Conversations(Protocol):
    """What channels may read of a conversation (`bot.core.lookup`)."""

    async def question_state(self, key: ConversationKey) -> str | None:
        """The state the conversation is in (whose question it waits on), if it exists."""
        ...

    async def is_known(self, key: ConversationKey) -> bool:
        """The conversation exists, or its first event is recorded and waiting."""
        ...


class HandoffRefs(Protocol):
    """Where handoffs show on an agent surface (`bot.store.HandoffStore`)."""

    async def get(self, handoff_id: int) -> Handoff: ...

    async def set_ref(
        self, handoff_id: int, *, surface: str, ref: str, data: dict[str, Any] | None = None
    ) -> None: ...

    async def by_ref(self, *, surface: str, ref: str) -> Handoff | None: ...


class AgentDesk(Protocol):
    """What agent surfaces may do with handoffs (`bot.handoff.desk.HandoffDesk`)."""

    @property
    def handoffs(self) -> HandoffRefs: ...

    async def claim(self, handoff_id: int, agent: AgentRef) -> Handoff: ...

    async def release(
        self, handoff_id: int, agent: AgentRef, *, outcome: HandoffOutcome | None = None
    ) -> tuple[Handoff, Reply]: ...

    async def reply(self, handoff_id: int, agent: AgentRef, text: str) -> StoredMessage: ...

    async def note(self, handoff_id: int, agent: AgentRef, text: str) -> StoredMessage: ...

    async def canned_text(self, handoff_id: int, agent: AgentRef, name: str) -> str: ...
