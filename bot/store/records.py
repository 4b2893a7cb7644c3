"""What the store hands in and out, besides the shared types in `bot.models`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bot.errors import BotError, StoreError
from bot.models import Channel, ConversationKey, ConversationState, Mode

Direction = Literal["in", "out"]
Sender = Literal["user", "bot", "agent", "note", "system"]
OutboxStatus = Literal["pending", "sent", "failed"]


class ConcurrentUpdate(StoreError):
    """Someone saved the conversation since it was loaded (or created it first): reload, retry."""

    def __init__(self, key: ConversationKey, expected_version: int | None) -> None:
        self.key = key
        self.expected_version = expected_version
        super().__init__(f"{key} is no longer at version {expected_version}")

    def __repr__(self) -> str:
        return f"ConcurrentUpdate(key={str(self.key)!r}, expected_version={self.expected_version})"


class AlreadyHandled(BotError):
    """The inbound event this turn answers was marked processed by someone else first (another
    worker given the same event, or an earlier run): nothing of the turn was written."""

    def __init__(self, inbox_id: int) -> None:
        self.inbox_id = inbox_id
        super().__init__(f"inbox event {inbox_id} was handled already")


class UnknownConversation(StoreError):
    """The conversation asked for does not exist."""

    def __init__(self, key: ConversationKey) -> None:
        self.key = key
        super().__init__(f"no conversation {key}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptEntry:
    """One line to append to a transcript."""

    direction: Direction
    sender: Sender
    text: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredConversation:
    id: int
    key: ConversationKey
    state: ConversationState
    mode: Mode
    agent: str | None
    version: int  # pass back as `expected_version` when saving
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnWrite:
    """Everything one turn writes (see `SqlStore.save_turns`)."""

    key: ConversationKey
    state: ConversationState
    expected_version: int | None  # None: create the conversation
    conversation_id: int | None = None  # needed to update (as loaded with its version)
    inbound: Sequence[TranscriptEntry] = ()
    outbound: Sequence[TranscriptEntry] = ()
    deliver: Sequence[Mapping[str, Any]] | None = None  # messages for the outbox
    mode: Mode | None = None  # a new mode, or None to keep it
    inbox_id: int | None = None  # the recorded inbound event this turn answers
    reply_token: str | None = None  # kept with the outbox item (see OutboxItem)
    event_at: datetime | None = None  # when the event answered happened (the token's age)


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedTurn:
    conversation_id: int
    version: int
    outbox_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An inbound event to record (see `SqlStore.record_events`)."""

    channel: Channel
    event_id: str  # unique per channel; the same on a redelivery
    address: str
    payload: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxEvent:
    """A recorded inbound event (as returned by `pending_events`: not processed yet)."""

    id: int
    channel: Channel
    event_id: str
    address: str
    payload: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    attempts: int
    processed_at: datetime | None = None
    error: str | None = None

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(channel=self.channel, address=self.address)


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxHealth:
    """Whether the inbox drains (`SqlStore.inbox_health`)."""

    pending: int  # events recorded and not processed
    oldest_received: datetime | None  # when the oldest of them was recorded
    failed: int  # events settled as failed (their error kept)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    """Rendered messages awaiting delivery to one address."""

    id: int
    conversation_id: int
    channel: Channel
    address: str
    payload: list[dict[str, Any]]
    status: OutboxStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    # The answered event's reply token and when it happened: a delivery cut short by a crash
    # is retried by reply while the token is fresh (a spent token then means delivered).
    reply_token: str | None = None
    event_at: datetime | None = None

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(channel=self.channel, address=self.address)
