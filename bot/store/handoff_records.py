"""What the handoff and agent stores hand in and out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.models import ConversationKey, Mode


class HandoffStatus(StrEnum):
    WAITING = "waiting"  # in the queue, no agent yet
    CLAIMED = "claimed"  # one agent holds it
    RELEASED = "released"  # the agent handed the conversation back to the bot
    CANCELLED = "cancelled"  # the user went back to the bot before an agent came

    @property
    def open(self) -> bool:
        return self in (HandoffStatus.WAITING, HandoffStatus.CLAIMED)


@dataclass(frozen=True, slots=True, kw_only=True)
class SurfaceRef:
    """Where a handoff shows on one agent surface, e.g. a Slack card: ref = its ts."""

    surface: str
    ref: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """One request for an agent, from the queue to its release (or cancellation)."""

    id: int
    conversation_id: int
    key: ConversationKey  # the user's channel and address: how to reach them
    status: HandoffStatus
    reason: str
    summary: dict[str, Any]  # see `bot.handoff.summary.summarize`
    requested_at: datetime
    claimed_at: datetime | None = None
    agent: str | None = None  # who holds it (agent name, or e.g. "slack:U0123")
    agent_name: str | None = None  # the name the user sees
    closed_at: datetime | None = None
    timeout_notified_at: datetime | None = None
    refs: tuple[SurfaceRef, ...] = ()

    def ref(self, surface: str) -> SurfaceRef | None:
        return next((r for r in self.refs if r.surface == surface), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChange:
    """Who moved a conversation between bot, waiting and agent, why and when."""

    conversation_id: int
    handoff_id: int | None
    from_mode: Mode
    to_mode: Mode
    who: str
    why: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent account (console and API); never carries the password hash out of the store
    except through `AgentStore.credentials`."""

    id: int
    name: str
    display_name: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentToken:
    id: int
    agent: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
