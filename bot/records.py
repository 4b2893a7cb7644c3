"""Records the store hands out that other layers read too: recorded inbound events, outbox
items, handoffs. A leaf: channels and the core use them without importing the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any, Final, Literal

from bot.errors import BadInput
from bot.models import Channel, ConversationKey, Mode

OutboxStatus = Literal["pending", "sent", "failed"]
FactKind = Literal[
    "entered",
    "answer",
    "pick",
    "not_understood",
    "result",
    "step",
    "handoff_requested",
    "handoff_claimed",
    "handoff_released",
    "booking_made",
    "ended",
    "abandoned",
    "cross",
]
"""What analytics records (see `bot.store.schema.facts`)."""


EVENT_KINDS: Final = ("handoff_requested", "handoff_claimed", "booking_made")
"""Facts that are funnel steps outside the flow's own states (`FunnelStepSpec.event`)."""


def event_step(kind: str) -> str:
    """The step value recorded (once per run) for an event: '@handoff_claimed'."""
    return "@" + kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """One thing that happened in a conversation, for analytics: never what anyone wrote.
    The store adds the conversation, its run, flow, version, variant, channel and the time."""

    kind: FactKind
    state: str | None = None
    value: str | None = None
    how: Literal["tapped", "typed"] | None = None
    stage: str | None = None  # typed: the NLU stage that understood it (or failed to)
    seconds: float | None = None  # an answer: how long after the question was asked


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


class HandoffStatus(StrEnum):
    WAITING = "waiting"  # in the queue, no agent yet
    CLAIMED = "claimed"  # one agent holds it
    RELEASED = "released"  # the agent handed the conversation back to the bot
    CANCELLED = "cancelled"  # the user went back to the bot before an agent came

    @property
    def open(self) -> bool:
        return self in (HandoffStatus.WAITING, HandoffStatus.CLAIMED)


class HandoffOutcome(StrEnum):
    """How a request ended for the agency, chosen by the agent on release (counted in insights)."""

    BOOKED = "booked"  # 面談予約済み
    INFO_ONLY = "info_only"  # 情報提供のみ
    DECLINED = "declined"  # 見送り
    FOLLOW_UP = "follow_up"  # 要フォロー

    @property
    def label(self) -> str:
        return OUTCOME_LABELS[self]


OUTCOME_LABELS: Final[dict[HandoffOutcome, str]] = {
    HandoffOutcome.BOOKED: "面談予約済み",
    HandoffOutcome.INFO_ONLY: "情報提供のみ",
    HandoffOutcome.DECLINED: "見送り",
    HandoffOutcome.FOLLOW_UP: "要フォロー",
}


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
    outcome: HandoffOutcome | None = None  # chosen on release (None: cancelled, or not said)
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


def brief_line(summary: dict[str, Any]) -> str:
    """The one line an agent reads first (role, frustrations, fit, direction), or ""."""
    return " ／ ".join(str(part) for part in summary.get("brief") or [])


def summary_facts(summary: dict[str, Any]) -> list[dict[str, str]]:
    """What the flow worked out, in its words; a summary stored before briefs existed kept
    raw slot keys there, which agents are not shown."""
    facts = summary.get("facts")
    return [f for f in facts if isinstance(f, dict)] if isinstance(facts, list) else []


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as short lines of text (Slack cards, plain-text views): answers by their
    short labels, then the flow's facts and its last card."""
    lines = [f"理由: {summary.get('reason', '')}"]
    if summary.get("contact"):
        lines.append(f"連絡先: {summary['contact']}")
    lines += [
        f"・{a.get('label') or a.get('question', '')}: {a.get('answer', '')}"
        for a in summary.get("answers", [])
    ]
    lines += [f"・{f.get('label', '')}: {f.get('value', '')}" for f in summary_facts(summary)]
    outcome = summary.get("outcome")
    if outcome:
        lines.append(f"■ {outcome.get('title', '')}")
        lines += [f"・{f['label']}: {f['value']}" for f in outcome.get("fields", [])]
    return lines


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTimer:
    """A timer a turn schedules in its own transaction (`TurnWrite.timers`), keyed
    `<kind>:<conversation id>:<name>` (the same again replaces its due time)."""

    kind: str
    name: str
    due_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timer:
    """A durable timer (`SqlStore.schedule_timer`): `kind` names the handler that runs it when
    `due_at` comes, for the conversation `conversation_id` (None: no conversation)."""

    id: int
    key: str
    kind: str
    conversation_id: int | None
    due_at: datetime
    payload: dict[str, Any]
    created_at: datetime
    fired_at: datetime | None = None
    cancelled_at: datetime | None = None
    outcome: str | None = None
    attempts: int = 0
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        return self.fired_at is None and self.cancelled_at is None


# ---------------------------------------------------------------- booking


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """How a user wants to be reached, and their consent to the privacy policy."""

    conversation_id: int
    name: str
    method: Literal["chat", "phone", "email"]
    phone: str | None
    email: str | None
    consent_at: datetime
    policy_version: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Booking:
    """A consultation booked by a user with an agent."""

    id: int
    conversation_id: int
    key: ConversationKey
    agent_id: int
    agent_name: str  # the agent's display name, as the user reads it
    starts_at: datetime
    ends_at: datetime
    status: Literal["booked", "cancelled", "done"]  # done: it took place (its time passed)
    token: str  # the secret part of the .ics URL
    created_at: datetime
    cancelled_at: datetime | None = None
    refs: dict[str, Any] = field(default_factory=dict)  # where agent surfaces show it
    contact_name: str | None = None
    contact: str | None = None  # how to reach the user, as agents read it: 「電話 090-…」


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One line of an agent's availability: weekly hours, extra hours on a day, or time off."""

    agent_id: int
    kind: Literal["weekly", "extra", "off"]
    weekday: int | None = None  # weekly: 0 = Monday
    day: date | None = None  # extra, off
    start: time | None = None  # off without times: the whole day
    end: time | None = None

    def __post_init__(self) -> None:
        if self.kind == "weekly" and (self.weekday is None or not 0 <= self.weekday <= 6):
            raise BadInput("weekly hours need a weekday (Mon..Sun)")
        if self.kind != "weekly" and self.day is None:
            raise BadInput(f"{self.kind} needs a day (YYYY-MM-DD)")
        if (self.start is None) != (self.end is None):
            raise BadInput("give both a start and an end time, or neither")
        if self.kind != "off" and self.start is None:
            raise BadInput(f"{self.kind} hours need a start and an end time")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise BadInput(f"{self.start:%H:%M}-{self.end:%H:%M} ends before it starts")
