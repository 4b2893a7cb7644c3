"""Our own frozen types: conversation keys, inbound events, outbound messages, effects.

Channel adapters translate LINE/Slack/web payloads into these at the edge; nothing past
`bot/channels/` sees a raw payload.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Channel(StrEnum):
    WEB = "web"
    LINE = "line"
    SLACK = "slack"
    CLI = "cli"


class Mode(StrEnum):
    """Who speaks for the bot side of a conversation."""

    BOT = "bot"
    WAITING = "waiting"  # a handoff was requested, no agent has claimed it yet
    AGENT = "agent"  # an agent owns the conversation; the bot is silent


class Status(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    INACTIVE = "inactive"  # the user left the channel (unfollow); data kept until retention


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConversationKey(Frozen):
    """Identifies one conversation: a user on a channel, optionally in a thread."""

    channel: Channel
    address: str

    def __str__(self) -> str:
        return f"{self.channel.value}:{self.address}"


# ---------------------------------------------------------------- inbound


class TextIn(Frozen):
    kind: Literal["text"] = "text"
    text: str


class ChoiceIn(Frozen):
    """A tapped button. `state` is the question the button belonged to (stale-click check)."""

    kind: Literal["choice"] = "choice"
    choice: str
    state: str | None = None
    label: str | None = None


class StartIn(Frozen):
    """The user opened the conversation (web page load, LINE follow, first Slack DM)."""

    kind: Literal["start"] = "start"
    returning: bool = False


class ResumeIn(Frozen):
    """An agent handed the conversation back to the bot."""

    kind: Literal["resume"] = "resume"
    withdrawn: bool = False  # the user cancelled before an agent came: pick up where they were


class FollowUpIn(Frozen):
    """A follow-up the flow declared is due (a durable timer fired): the bot speaks first."""

    kind: Literal["followup"] = "followup"
    followup: str


Inbound = Annotated[
    TextIn | ChoiceIn | StartIn | ResumeIn | FollowUpIn, Field(discriminator="kind")
]
"""What the engine takes; the service also takes the kinds below, which it answers itself."""


class MediaIn(Frozen):
    """A message the bot cannot read: a sticker, image, video, audio, file or location."""

    kind: Literal["media"] = "media"
    type: str


class LeftIn(Frozen):
    """The user left the channel (LINE: blocked the account)."""

    kind: Literal["unfollow"] = "unfollow"


class JoinedGroupIn(Frozen):
    """The bot was added to a group chat (it only talks one to one)."""

    kind: Literal["joined"] = "joined"


Event = TextIn | ChoiceIn | StartIn | ResumeIn | FollowUpIn | MediaIn | LeftIn | JoinedGroupIn
"""Every inbound kind the service takes (`bot.core.service.ConversationService.handle`)."""


# ---------------------------------------------------------------- outbound


class Choice(Frozen):
    id: str
    label: str
    selected: bool = False


class TextOut(Frozen):
    type: Literal["text"] = "text"
    text: str


class ChoicesOut(Frozen):
    """A question with buttons. `state` is echoed back in taps so stale buttons are detected."""

    type: Literal["choices"] = "choices"
    text: str
    state: str
    choices: tuple[Choice, ...]
    multi: bool = False


class CardField(Frozen):
    label: str
    value: str


class CardOut(Frozen):
    type: Literal["card"] = "card"
    title: str
    fields: tuple[CardField, ...] = ()
    footer: str = ""

    def as_text(self) -> str:
        """Plain-text rendering: fallbacks (LINE altText, Slack `text`, terminal)."""
        lines = [self.title]
        lines += [f"■ {f.label}\n{f.value}" for f in self.fields]
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)


Outbound = Annotated[TextOut | ChoicesOut | CardOut, Field(discriminator="type")]
Message = TextOut | ChoicesOut | CardOut
"""One outbound message, as code passes it around (`Outbound` is its parsing form)."""


def outbound_text(message: TextOut | ChoicesOut | CardOut) -> str:
    if isinstance(message, CardOut):
        return message.as_text()
    return message.text


# ---------------------------------------------------------------- effects


class HandoffRequested(Frozen):
    kind: Literal["handoff"] = "handoff"
    reason: str


class FollowUpScheduled(Frozen):
    """The turn entered a state that schedules one of the flow's follow-ups (its condition
    held): the service arms a durable timer for it."""

    kind: Literal["followup"] = "followup"
    followup: str
    after_seconds: int


class ConversationEnded(Frozen):
    kind: Literal["ended"] = "ended"


class Classified(Frozen):
    """How free text was understood; logged so examples can grow from real traffic."""

    kind: Literal["classified"] = "classified"
    state: str
    intents: tuple[str, ...]
    score: float
    stage: str


class NeedFacts(Frozen):
    """A booking step needs what the service knows (slots, contact, booking): the service looks
    them up and runs the turn again with them (the engine itself does no I/O)."""

    kind: Literal["need_facts"] = "need_facts"


class ContactGiven(Frozen):
    """The user gave their contact details and consented to the privacy policy."""

    kind: Literal["contact"] = "contact"
    name: str
    method: Literal["chat", "phone", "email"]
    phone: str | None = None
    email: str | None = None


class BookingRequested(Frozen):
    """The user picked a slot: the service books it and runs the turn again with the outcome
    (`Facts.booking`, or `Facts.taken` when someone was faster)."""

    kind: Literal["book"] = "book"
    slot: str
    replaces: int | None = None  # a reschedule: the booking given up for this one


class BookingCancelled(Frozen):
    kind: Literal["cancel_booking"] = "cancel_booking"
    booking_id: int


BookingEffect = NeedFacts | ContactGiven | BookingRequested | BookingCancelled
Effect = Annotated[
    HandoffRequested | ConversationEnded | Classified | FollowUpScheduled | BookingEffect,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- facts (service -> engine)


class Offer(Frozen):
    """A free slot as a button: `id` comes back when it is tapped."""

    id: str
    label: str


class ContactView(Frozen):
    name: str
    method: Literal["chat", "phone", "email"]
    phone: str | None = None
    email: str | None = None


class BookedView(Frozen):
    """The user's open booking, as templates show it (`{{ booking.when }}` ...)."""

    id: int
    slot: str  # the Offer id it was booked from
    when: str  # 「12月8日（火）19:00〜19:30」
    agent: str
    method: Literal["line", "video", "phone"]
    url: str = ""  # the meeting link, if any
    ics_url: str = ""


class Facts(Frozen):
    """What the service knows that booking steps need, passed into a turn as data."""

    offers: tuple[Offer, ...] = ()
    contact: ContactView | None = None  # None also when given under an older policy version
    booking: BookedView | None = None
    taken: str | None = None  # the slot the user picked went to someone else just now
    policy_url: str = ""


# ---------------------------------------------------------------- conversation state


class ConversationState(Frozen):
    """What the engine needs to continue a conversation; persisted by the store."""

    flow: str
    flow_version: str
    state: str
    slots: dict[str, Any] = Field(default_factory=dict)
    selection: tuple[str, ...] = ()  # multi-select choices picked so far in the current question
    misses: int = 0  # consecutive unrecognised answers to the current question
    pending_confirm: tuple[str, ...] = ()  # intents guessed by the classifier, awaiting はい/いいえ
    return_to: str | None = None  # the question the user left (handoff, end), for '@previous'
    status: Status = Status.ACTIVE


class Turn(Frozen):
    """The engine's answer to one inbound event."""

    conversation: ConversationState
    messages: tuple[TextOut | ChoicesOut | CardOut, ...]
    effects: tuple[
        HandoffRequested | ConversationEnded | Classified | FollowUpScheduled | BookingEffect, ...
    ] = ()
    entered: tuple[str, ...] = ()  # states entered during the turn, in order


class StoredMessage(Frozen):
    """One line of a transcript."""

    id: int
    direction: Literal["in", "out"]
    sender: Literal["user", "bot", "agent", "note", "system"]
    text: str
    body: dict[str, Any]
    created_at: datetime
