"""The flow vocabulary: typed models that YAML flow files load into.

A flow is a set of named states. Entering a state runs, in order: `set` (computed slots),
`say` (messages, each optionally conditional), then one of
  - `ask`: a question; the conversation waits for an answer that fills `ask.slot`;
  - `handoff`: a human agent is asked for; the conversation waits until handed back;
  - `end: true`: the conversation is over;
  - `book`: contact details with consent, then a consultation slot (or, with
    `purpose: contact`, the contact details alone); the service offers the slots and books,
    the step's texts are the flow's `booking:` section; it goes on to `next` when done;
  - nothing: it moves straight on to `next`.
`next` is a state name or a list of branches `{if: <expression>, goto: <state>}`; the first
branch whose condition holds wins, a branch without `if` always holds. A choice can carry its own
`goto`, which wins over `next`.

Expressions and `{{ templates }}` are Jinja2, evaluated in a sandbox over the slots, the flow's
`vars` and `label` (slot -> label(s) of the chosen choice(s)).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREVIOUS = "@previous"  # a choice target: back to the question a returning user left
BACK = "@back"  # a command target: back one question, keeping the answers given before it


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChoiceSpec(Model):
    id: str = Field(description="Stable id stored in the slot and carried by buttons.")
    label: str = Field(description="Button text (LINE: at most 20 characters).")
    goto: str | None = Field(
        default=None,
        description="State to go to when chosen; '@previous' goes back to the question a "
        "returning user had left.",
    )
    reset: bool = Field(default=False, description="Forget all slots first (start over).")
    keywords: tuple[str, ...] = Field(
        default=(), description="Precise words that, found in free text, select this choice."
    )
    examples: tuple[str, ...] = Field(
        default=(), description="Example phrases users type for this choice (for the classifier)."
    )
    confirm: str | None = Field(
        default=None,
        description="How to restate this choice when a guess is confirmed (「〜ということですね？」).",
    )
    opposite: str | None = Field(
        default=None,
        description="The choice a negated mention of this one means: 「好きじゃない」 names 'yes' "
        "negated, so 'no'. Without it a negated mention names nothing.",
    )
    topic: tuple[str, ...] = Field(
        default=(),
        description="Words of the question's own statement that, repeated alone, mean this "
        "choice (「目立ちたい」 to 「スポットライトを浴びていたい」); any answer word wins over them. "
        "Usually given per question (QuestionSpec.topic) for shared choices.",
    )
    unsure: bool = Field(
        default=False,
        description="The don't-know answer: a bare hesitation (「うーん」) or a doubtful question "
        "(「向いてるのかな」) lands here.",
    )


class QuestionSpec(Model):
    text: str = Field(description="The question. Templated.")
    label: str | None = Field(
        default=None,
        description="The question's short name for agents (「職種」); the console and the Slack "
        "card show it beside the answer instead of the whole question.",
    )
    slot: str = Field(description="Slot the answer fills: a choice id, or a list for multi.")
    choices: tuple[ChoiceSpec, ...] = Field(min_length=1)
    multi: bool = Field(default=False, description="Several choices may be picked.")
    done_label: str = Field(default="これで全部", description="Multi-select: the finish button.")
    min_selected: int = Field(default=1, ge=0, description="Multi-select: picks needed to finish.")
    accepts: tuple[str, ...] = Field(
        default=(),
        description="Global command ids understood here besides the choices (default: all).",
    )
    echo: bool = Field(
        default=True,
        description="Restate an answer the bot read from typed text (texts.echo), so a misread "
        "can be corrected; off where the next message names the answer anyway.",
    )
    topic: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="choice id: words of this question's statement meaning that choice when "
        "repeated alone (「目立ちたい」 is yes to 「スポットライトを浴びていたい」; negated, the "
        "choice's opposite). Added to the choices' own `topic`.",
    )
    capture: dict[str, str] = Field(
        default_factory=dict,
        description="slot: regular expression. Details typed with the answer (「経理3年目」) are "
        "kept: the first group (or the whole match) of the first match fills the slot.",
    )

    @model_validator(mode="before")
    @classmethod
    def _topics_into_choices(cls, data: object) -> object:
        """Shared choices (a YAML anchor) get this question's topic words as their own."""
        if not isinstance(data, dict) or not isinstance(data.get("topic"), dict):
            return data
        topic, choices = data["topic"], data.get("choices")
        if not isinstance(choices, list):
            return data
        merged = []
        for choice in choices:
            if isinstance(choice, dict) and str(choice.get("id")) in topic:
                words = [*choice.get("topic", ()), *topic[str(choice.get("id"))]]
                choice = {**choice, "topic": words}
            merged.append(choice)
        return {**data, "choices": merged}

    @model_validator(mode="after")
    def _patterns(self) -> QuestionSpec:
        for slot, pattern in self.capture.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"capture '{slot}': bad regular expression: {exc}") from exc
        return self


class CardFieldSpec(Model):
    label: str
    value: str = Field(description="Templated; an empty result hides the field.")


class CardSpec(Model):
    title: str
    fields: tuple[CardFieldSpec, ...] = ()
    footer: str = ""


class MessageSpec(Model):
    text: str | None = Field(default=None, description="Templated text.")
    card: CardSpec | None = None
    if_: str | None = Field(default=None, alias="if", description="Shown only when this holds.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_body(self) -> MessageSpec:
        if (self.text is None) == (self.card is None):
            raise ValueError("a message needs exactly one of 'text' or 'card'")
        return self


class BranchSpec(Model):
    if_: str | None = Field(default=None, alias="if", description="Expression; absent = always.")
    goto: str

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HandoffSpec(Model):
    reason: str = Field(description="Why the user is handed to an agent (shown to the agent).")


class BookSpec(Model):
    purpose: Literal["book", "contact"] = Field(
        default="book",
        description="book: contact details (unless given already), then a slot; an open "
        "booking is shown with reschedule / cancel. contact: show or change the contact details.",
    )


class BookingTextsSpec(Model):
    """What booking steps say; `{{ contact.* }}`, `{{ booking.* }}`, `{{ policy_url }}` and
    `{{ problem }}` are there for the templates."""

    ask_name: str
    bad_name: str
    ask_method: str
    method_chat: str = Field(description="Button: be contacted in this chat.")
    method_phone: str
    method_email: str
    ask_phone: str
    bad_phone: str
    ask_email: str
    bad_email: str
    ask_consent: str
    consent_yes: str
    consent_no: str
    declined: str
    show_contact: str
    change_contact: str
    keep_contact: str
    contact_saved: str
    ask_slot: str
    more_slots: str = Field(description="Button: the next page of slots (「ほかの日時」).")
    no_more_slots: str = Field(description="Said when the pages run out; the first comes again.")
    no_slots: str
    not_now: str
    taken: str
    booked: str
    show_booking: str
    reschedule: str
    cancel: str
    keep_booking: str
    ask_cancel: str
    cancel_yes: str
    cancel_no: str
    cancelled: str
    cancelled_by_agent: str = Field(
        description="Sent when an agent cancels the user's booking (console, agent API)."
    )
    reminder: str = Field(
        description="Sent before a booking (REMINDER_BEFORE_HOURS); `{{ soon }}` is true for "
        "the one within 12 hours."
    )


class StateSpec(Model):
    set: dict[str, str] = Field(default_factory=dict, description="slot: expression")
    say: tuple[str | MessageSpec, ...] = ()
    ask: QuestionSpec | None = None
    handoff: HandoffSpec | None = None
    book: BookSpec | None = None
    end: bool = False
    next: str | tuple[BranchSpec, ...] | None = None
    fallback: bool = Field(
        default=False,
        description="Where conversations go when their state vanished after a flow change.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> StateSpec:
        kinds = [
            k
            for k, on in (
                ("ask", self.ask),
                ("handoff", self.handoff),
                ("book", self.book),
                ("end", self.end),
            )
            if on
        ]
        if len(kinds) > 1:
            raise ValueError(
                f"a state is one of ask, handoff, book or end, not {' and '.join(kinds)}"
            )
        if self.end and self.next is not None:
            raise ValueError("an end state has no 'next'")
        if self.book and self.next is None:
            raise ValueError("a book state needs a 'next' (where the user goes when done)")
        return self

    def messages(self) -> tuple[MessageSpec, ...]:
        return tuple(MessageSpec(text=m) if isinstance(m, str) else m for m in self.say)


class CommandSpec(Model):
    """A global command: understood in every state (unless a question narrows `accepts`)."""

    id: str
    label: str = Field(description="Button text where the command is offered.")
    keywords: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    phrases: tuple[str, ...] = Field(
        default=(),
        description="Requests found anywhere in a message (unless negated), where keywords must "
        "be most of it. '{a|b}' spells alternatives: '{人|人間}と話したい'.",
    )
    say: tuple[str, ...] = Field(default=(), description="Said before acting. Templated.")
    goto: str | None = Field(
        default=None, description="State to go to; '@back' goes back one question; absent = re-ask."
    )
    reset: bool = Field(default=False, description="Forget all slots (start over).")
    confirm: str | None = Field(
        default=None,
        description="Asked first (はい/いいえ) when the conversation already holds answers.",
    )
    set: dict[str, str] = Field(
        default_factory=dict, description="slot: expression, set before the command acts."
    )
    everywhere: bool = Field(
        default=False,
        description="Understood even where a question's `accepts` narrows the commands "
        "(e.g. 配信停止, which must work in every state).",
    )


_DELAY = re.compile(r"(\d+)([dhm])")
_DELAY_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class FollowUpSpec(Model):
    """A message the bot sends later by itself: entering the state `entered` (or running the
    command `command`) schedules it (a durable timer), and when `delay` has passed the
    conversation goes to `goto`, if `if` still holds (quiet hours, users who left or are with
    an agent are the service's business)."""

    id: str = Field(description="Stable id: the timer's name, one per conversation.")
    entered: str | None = Field(
        default=None, description="Entering this state schedules (or re-schedules) it."
    )
    command: str | None = Field(
        default=None, description="Or: running this global command schedules it."
    )
    delay: str = Field(pattern=r"^\d+[dhm]$", description="How long after: '3d', '12h' or '30m'.")
    if_: str | None = Field(
        default=None,
        alias="if",
        description="Expression checked when scheduled and again when due (e.g. the user's "
        "opt-in): false means nothing is sent.",
    )
    goto: str = Field(description="The state the follow-up opens (usually a question).")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_trigger(self) -> FollowUpSpec:
        if (self.entered is None) == (self.command is None):
            raise ValueError("a follow-up needs exactly one of 'entered' or 'command'")
        return self

    @property
    def wait(self) -> timedelta:
        found = _DELAY.fullmatch(self.delay)
        if found is None:  # the field's pattern keeps this from happening
            raise ValueError(f"bad delay {self.delay!r}")
        return timedelta(**{_DELAY_UNITS[found.group(2)]: int(found.group(1))})


class FaqSpec(Model):
    """A question to the bot (or small talk) answered in any state; the question waits on."""

    id: str
    kind: Literal["question", "small_talk"] = Field(
        default="question",
        description="question: wins over the choices when the message asks something "
        "(「秘書検定って何？」); small_talk: only when nothing else is understood.",
    )
    keywords: tuple[str, ...] = Field(min_length=1)
    say: tuple[str, ...] = Field(min_length=1, description="The answer. Templated.")


class BriefFactSpec(Model):
    label: str = Field(description="What agents read as the fact's name (short).")
    value: str = Field(description="Templated; an empty result hides the fact.")


class BriefSpec(Model):
    """What an agent reads first about a request (console, Slack card), in words, never slot
    keys. Templates see the slots, `label` and `vars` as the flow's texts do; a slot the user
    never reached renders empty, and an empty part is left out."""

    line: tuple[str, ...] = Field(
        min_length=1,
        description="Parts of the one-line brief, in order (e.g. role, frustrations, fit, "
        "direction). Templated.",
    )
    facts: tuple[BriefFactSpec, ...] = Field(
        default=(),
        description="What the flow worked out, as agents read it; computed slots not named "
        "here are not shown.",
    )


class TextsSpec(Model):
    """What the bot says when the flow itself has nothing to say."""

    not_understood: str = (
        "ごめんなさい、うまく受け取れませんでした。下のボタンから選んでもらえますか？"
    )
    still_not_understood: str = (
        "うまくお答えできずごめんなさい。ボタンから選ぶか、担当者と直接話すこともできますよ。"
    )
    stale_button: str = "そのボタンは前の質問のものでした。いまの質問はこちらです。"
    confirm: str = "「{{ guess }}」ということですね？"
    confirm_yes: str = "はい"
    confirm_no: str = "いいえ"
    selected_so_far: str = "いま選んでいるのは「{{ picked }}」です。ほかにもあれば選んで、終わったら「{{ done }}」を押してください。"
    need_selection: str = "ひとつ以上選んでから「{{ done }}」を押してください。"
    flow_changed: str = "会話の内容が新しくなったので、少し前から続けますね。"
    ended: str = "今日はありがとうございました。また話したくなったら、いつでも声をかけてください。"
    waiting: str = "担当者におつなぎしています。もう少しお待ちください。"
    echo: str = "「{{ answer }}」として進めますね。違うときは「戻る」で直せます。"
    back: str = "ひとつ前の質問に戻りますね。"
    back_at_start: str = "これが最初の質問です。"
    cancelled: str = "わかりました、このまま続けましょう。"
    confirm_go: str = "はい"
    confirm_stay: str = "いいえ、続ける"


FunnelEvent = Literal["handoff_requested", "handoff_claimed", "booking_made"]


class FunnelStepSpec(Model):
    """One step of the flow's funnel, reached once per run by exactly one of: entering one of
    `enter`'s states, answering the question `answer`, or an `event` outside the flow."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="Stable id, stored in facts.")
    label: str = Field(description="How insights names the step.")
    enter: tuple[str, ...] = Field(default=(), description="Reached on entering one of these.")
    answer: str | None = Field(default=None, description="Reached when this question is answered.")
    event: FunnelEvent | None = Field(
        default=None,
        description="Reached by what happens around the flow: an agent asked for, an agent "
        "talking to the user (claimed), a booking made.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> FunnelStepSpec:
        ways = [
            w
            for w, on in (("enter", self.enter), ("answer", self.answer), ("event", self.event))
            if on
        ]
        if len(ways) != 1:
            raise ValueError(
                "a funnel step is reached by exactly one of 'enter', 'answer' or 'event'"
            )
        return self


class ResultSpec(Model):
    """A value the flow works out (e.g. the fit result), counted when its state is entered."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    label: str
    state: str = Field(description="The state whose `set` works the slot out.")
    slot: str
    labels: dict[str, str] = Field(default_factory=dict, description="value: how to show it")


class InsightsSpec(Model):
    """What `/console/insights` shows of this flow (analytics is declared here, not in code)."""

    funnel: tuple[FunnelStepSpec, ...] = Field(
        min_length=1,
        description="In order; the first step (an `enter` step) begins a run: the period's "
        "cohort is the runs begun in it.",
    )
    cross: tuple[str, str] | None = Field(
        default=None, description="Two questions tabulated against each other (rows, columns)."
    )
    distributions: tuple[str, ...] = Field(
        default=(), description="Questions whose answers are shown as a distribution."
    )
    results: tuple[ResultSpec, ...] = ()


class VariantSpec(Model):
    """An A/B variant: the flow with some states (and vars) replaced, given to `weight` in the
    sum of the weights of users (by a hash of their channel and address)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    weight: int = Field(ge=0, description="Relative share of new conversations (0: none).")
    states: dict[str, StateSpec] = Field(
        default_factory=dict, description="state name: the whole state as this variant has it."
    )
    vars: dict[str, str] = Field(default_factory=dict, description="vars this variant changes.")
    file: str | None = Field(
        default=None,
        description="A flow file beside this one that is this variant whole (same flow id), "
        "instead of `states` and `vars`.",
    )

    @model_validator(mode="after")
    def _whole_or_parts(self) -> VariantSpec:
        if self.file is not None and (self.states or self.vars):
            raise ValueError("a variant is either a 'file' or replaced 'states'/'vars', not both")
        return self


class FlowSpec(Model):
    flow: str = Field(description="Flow id, stored with each conversation.")
    title: str = ""
    start: str = Field(description="First state of a new conversation.")
    max_misses: int = Field(default=2, ge=1, description="Unrecognised answers before help.")
    vars: dict[str, str] = Field(
        default_factory=dict, description="Constants for templates (e.g. agency name)."
    )
    texts: TextsSpec = Field(default_factory=TextsSpec)
    brief: BriefSpec | None = Field(
        default=None, description="What agents read first about a request (see BriefSpec)."
    )
    commands: tuple[CommandSpec, ...] = ()
    booking: BookingTextsSpec | None = Field(
        default=None, description="Texts of the `book` steps (required when a state books)."
    )
    faq: tuple[FaqSpec, ...] = Field(
        default=(), description="Questions to the bot answered in every state."
    )
    followups: tuple[FollowUpSpec, ...] = Field(
        default=(), description="Messages the bot sends later by itself (durable timers)."
    )
    states: dict[str, StateSpec] = Field(min_length=1)
    returning: str | None = Field(
        default=None, description="State for a user who comes back (e.g. LINE unblock)."
    )
    resume: str | None = Field(
        default=None, description="State the bot resumes at when an agent hands back."
    )
    again: str | None = Field(
        default=None,
        description="State for a message sent after the conversation ended (default: returning).",
    )
    insights: InsightsSpec | None = Field(
        default=None, description="Funnel steps and answer tables for /console/insights."
    )
    variants: tuple[VariantSpec, ...] = Field(
        default=(),
        description="A/B variants (each the flow with some states replaced); users keep theirs.",
    )

    @model_validator(mode="after")
    def _booking_texts(self) -> FlowSpec:
        booking = [name for name, state in self.states.items() if state.book]
        if booking and self.booking is None:
            raise ValueError(f"state '{booking[0]}' books: the flow needs a 'booking:' section")
        return self

    def command(self, command_id: str) -> CommandSpec | None:
        return next((c for c in self.commands if c.id == command_id), None)

    def command_labelled(self, label: str) -> CommandSpec | None:
        """The command shown as `label` (a rich menu's postback may carry the words)."""
        return next((c for c in self.commands if c.label == label), None)

    def followup(self, followup_id: str) -> FollowUpSpec | None:
        return next((f for f in self.followups if f.id == followup_id), None)


StepKind = Literal["ask", "handoff", "book", "end", "pass"]


def step_kind(state: StateSpec) -> StepKind:
    if state.ask:
        return "ask"
    if state.handoff:
        return "handoff"
    if state.book:
        return "book"
    if state.end:
        return "end"
    return "pass"
