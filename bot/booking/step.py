"""The flow's `book` step: contact details with consent, then a consultation slot; an open
booking is shown with reschedule and cancel. Pure like the engine that runs it: what the
service knows (free slots, the contact given, the open booking) comes in as `Facts`, and
what must happen outside (saving the contact, booking, cancelling) goes out as effects.

The step's progress is the engine-own slot `_book` ({"phase": ..., the form's answers}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

from bot.booking.contact import clean_email, clean_name, clean_phone
from bot.flows.schema import BookSpec, ChoiceSpec, CommandSpec, FlowSpec
from bot.models import (
    BookingCancelled,
    BookingRequested,
    Choice,
    ChoicesOut,
    ContactGiven,
    Facts,
    NeedFacts,
    Offer,
)
from bot.nlu.understanding import YES, Understanding, yes_or_no

PROGRESS: Final = "_book"
PAGE: Final = 3  # slots per question; LINE shows a row of quick replies
PREFIX: Final = "bk:"
SLOT_PREFIX: Final = "bk:slot:"
MORE: Final = "bk:more"
NOT_NOW: Final = "bk:not_now"
AGREE: Final = "bk:agree"
DECLINE: Final = "bk:decline"
CHANGE: Final = "bk:change"
KEEP: Final = "bk:keep"
RESCHEDULE: Final = "bk:reschedule"
CANCEL: Final = "bk:cancel"
CANCEL_YES: Final = "bk:cancel_yes"
CANCEL_NO: Final = "bk:cancel_no"
METHODS: Final = ("chat", "phone", "email")


class Turn(Protocol):
    """What the step needs of the engine's turn under construction."""

    facts: Facts | None
    conv: Any
    messages: list[Any]
    effects: list[Any]

    def say(self, source: str, **extra: Any) -> None: ...
    def render(self, source: str, **extra: Any) -> str: ...
    def fill(self, slot: str, value: Any) -> None: ...
    def leave_book(self) -> None: ...
    def run_command(self, command: CommandSpec) -> None: ...
    def understand(
        self, text: str, choices: Sequence[ChoiceSpec], *, faqs: bool = True
    ) -> Understanding: ...
    def answer_faq(self, faq_id: str) -> bool: ...


class BookStep:
    """One turn's work in a `book` state named `name`."""

    def __init__(self, turn: Turn, name: str, spec: BookSpec, flow: FlowSpec) -> None:
        assert flow.booking is not None  # FlowSpec refuses a book state without its texts
        self.turn = turn
        self.name = name
        self.spec = spec
        self.texts = flow.booking
        self.flow_texts = flow.texts
        self.commands = flow.commands

    # ------------------------------------------------------------ events

    def enter(self) -> None:
        facts = self._facts()
        if facts is None:
            return
        self._set({})
        if self.spec.purpose == "contact":
            if facts.contact is not None:
                self._phase("contact")
            else:
                self._phase("name")
        elif facts.booking is not None:
            self._phase("manage")
        elif facts.contact is None:
            self._phase("name")
        else:
            self._phase("pick")

    def on_choice(self, choice: str) -> None:
        facts = self._facts()
        if facts is None:
            return
        phase = self._progress().get("phase", "")
        if choice.startswith(SLOT_PREFIX) and phase == "pick":
            self._picked(choice.removeprefix(SLOT_PREFIX), facts)
            return
        if choice not in {c.id for c in self._choices(phase, facts)}:
            self.turn.say(self._stale())
            self.ask()
            return
        self._chose(phase, choice, facts)

    def on_text(self, text: str) -> None:
        facts = self._facts()
        if facts is None:
            return
        phase = self._progress().get("phase", "")
        if phase in ("name", "phone", "email"):
            understood = self.turn.understand(text, (), faqs=False)
            command = self._command(understood.command)
            if command is not None:
                self.turn.run_command(command)
                return
            self._typed(phase, text)
            return
        if phase in ("consent", "cancel_confirm"):
            verdict = yes_or_no(text)
            if verdict is not None:
                yes = AGREE if phase == "consent" else CANCEL_YES
                no = DECLINE if phase == "consent" else CANCEL_NO
                self._chose(phase, yes if verdict == YES else no, facts)
                return
        choices = self._choices(phase, facts)
        specs = [ChoiceSpec(id=c.id, label=c.label) for c in choices]
        understood = self.turn.understand(text, specs)
        command = self._command(understood.command)
        if command is not None:
            self.turn.run_command(command)
            return
        if understood.faq and self.turn.answer_faq(understood.faq):
            self.ask()
            return
        if understood.intents:
            picked = understood.intents[0]
            if picked.startswith(SLOT_PREFIX):
                self._picked(picked.removeprefix(SLOT_PREFIX), facts)
            else:
                self._chose(phase, picked, facts)
            return
        self.turn.say(self._not_understood())
        self.ask()

    def ask(self) -> None:
        """The question of the current phase, again."""
        facts = self.turn.facts
        if facts is None:
            return
        phase = self._progress().get("phase", "")
        self._ask(phase, facts)

    # ------------------------------------------------------------ phases

    def _phase(self, phase: str) -> None:
        progress = {**self._progress(), "phase": phase}
        self._set(progress)
        facts = self.turn.facts
        assert facts is not None
        self._ask(phase, facts)

    def _ask(self, phase: str, facts: Facts) -> None:
        t = self.texts
        texts = {
            "name": t.ask_name,
            "method": t.ask_method,
            "phone": t.ask_phone,
            "email": t.ask_email,
            "consent": t.ask_consent,
            "contact": t.show_contact,
            "manage": t.show_booking,
            "cancel_confirm": t.ask_cancel,
        }
        if phase == "pick":
            self._ask_slot(facts)
            return
        choices = self._choices(phase, facts)
        text = self.turn.render(texts.get(phase, t.ask_name))
        if choices:
            self.turn.messages.append(ChoicesOut(text=text, state=self.name, choices=choices))
        else:
            self.turn.say(texts.get(phase, t.ask_name))

    def _ask_slot(self, facts: Facts) -> None:
        t = self.texts
        if not facts.offers:
            self.turn.say(t.no_slots)
            self._done()
            return
        self.turn.messages.append(
            ChoicesOut(
                text=self.turn.render(t.ask_slot),
                state=self.name,
                choices=self._slot_choices(facts),
            )
        )

    def _choices(self, phase: str, facts: Facts) -> tuple[Choice, ...]:
        t = self.texts
        if phase == "method":
            return (
                Choice(id=f"{PREFIX}chat", label=t.method_chat),
                Choice(id=f"{PREFIX}phone", label=t.method_phone),
                Choice(id=f"{PREFIX}email", label=t.method_email),
            )
        if phase == "consent":
            return (Choice(id=AGREE, label=t.consent_yes), Choice(id=DECLINE, label=t.consent_no))
        if phase == "contact":
            return (
                Choice(id=CHANGE, label=t.change_contact),
                Choice(id=KEEP, label=t.keep_contact),
            )
        if phase == "manage":
            return (
                Choice(id=RESCHEDULE, label=t.reschedule),
                Choice(id=CANCEL, label=t.cancel),
                Choice(id=KEEP, label=t.keep_booking),
            )
        if phase == "cancel_confirm":
            return (
                Choice(id=CANCEL_YES, label=t.cancel_yes),
                Choice(id=CANCEL_NO, label=t.cancel_no),
            )
        if phase == "pick":
            return self._slot_choices(facts)
        return ()

    def _slot_choices(self, facts: Facts) -> tuple[Choice, ...]:
        page = int(self._progress().get("page", 0))
        shown = _page(facts.offers, page)
        choices = [Choice(id=SLOT_PREFIX + o.id, label=o.label) for o in shown]
        if len(facts.offers) > PAGE:
            choices.append(Choice(id=MORE, label=self.texts.more_slots))
        choices.append(Choice(id=NOT_NOW, label=self.texts.not_now))
        return tuple(choices)

    def _chose(self, phase: str, choice: str, facts: Facts) -> None:
        progress = self._progress()
        if phase == "method":
            method = choice.removeprefix(PREFIX)
            self._set({**progress, "method": method})
            self._phase({"chat": "consent", "phone": "phone", "email": "email"}[method])
        elif phase == "consent" and choice == AGREE:
            self.turn.effects.append(
                ContactGiven(
                    name=progress.get("name", ""),
                    method=progress.get("method", "chat"),
                    phone=progress.get("phone"),
                    email=progress.get("email"),
                )
            )
            if self.spec.purpose == "contact":
                self.turn.say(self.texts.contact_saved)
                self._done()
            else:
                self._phase("pick")
        elif phase == "consent":
            self.turn.say(self.texts.declined)
            self._done()
        elif phase == "contact" and choice == CHANGE:
            self._phase("name")
        elif choice in (KEEP, NOT_NOW, CANCEL_NO):
            self._done()
        elif phase == "manage" and choice == RESCHEDULE:
            self._set({**progress, "page": 0})
            self._phase("pick")
        elif phase == "manage" and choice == CANCEL:
            self._phase("cancel_confirm")
        elif phase == "cancel_confirm" and choice == CANCEL_YES and facts.booking is not None:
            self.turn.effects.append(BookingCancelled(booking_id=facts.booking.id))
            self.turn.say(self.texts.cancelled)
            self._done()
        elif phase == "pick" and choice == MORE:
            page = int(progress.get("page", 0)) + 1
            if page * PAGE >= len(facts.offers):
                self.turn.say(self.texts.no_more_slots)
                page = 0
            self._set({**progress, "page": page})
            self._ask_slot(facts)
        else:
            self.ask()

    def _typed(self, phase: str, text: str) -> None:
        progress = self._progress()
        if phase == "name":
            name = clean_name(text)
            if name is None:
                self.turn.say(self.texts.bad_name)
                self.ask()
                return
            self._set({**progress, "name": name})
            self._phase("method")
            return
        cleaned = clean_phone(text) if phase == "phone" else clean_email(text)
        if cleaned is None:
            self.turn.say(self.texts.bad_phone if phase == "phone" else self.texts.bad_email)
            self.ask()
            return
        self._set({**progress, phase: cleaned})
        self._phase("consent")

    def _picked(self, slot: str, facts: Facts) -> None:
        """A slot was chosen: booked already (the service's second run), taken by someone
        faster, or to be booked now: the service checks it is free (a button shown before
        someone else booked it is not), books it and runs the turn again."""
        progress = self._progress()
        if facts.booking is not None and facts.booking.slot == slot:
            self.turn.say(self.texts.booked)
            self._done()
            return
        if facts.taken == slot:
            self.turn.say(self.texts.taken)
            self._set({**progress, "page": 0})
            self._ask_slot(facts)
            return
        replaces = facts.booking.id if facts.booking is not None else None
        self.turn.effects.append(BookingRequested(slot=slot, replaces=replaces))

    def _done(self) -> None:
        self._set(None)
        self.turn.leave_book()

    # ------------------------------------------------------------ helpers

    def _facts(self) -> Facts | None:
        if self.turn.facts is None:
            self.turn.effects.append(NeedFacts())
        return self.turn.facts

    def _progress(self) -> dict[str, Any]:
        value = self.turn.conv.slots.get(PROGRESS)
        return dict(value) if isinstance(value, dict) else {}

    def _set(self, progress: dict[str, Any] | None) -> None:
        self.turn.fill(PROGRESS, progress)

    def _command(self, command_id: str | None) -> CommandSpec | None:
        if command_id is None:
            return None
        return next((c for c in self.commands if c.id == command_id), None)

    def _stale(self) -> str:
        return self.flow_texts.stale_button

    def _not_understood(self) -> str:
        return self.flow_texts.not_understood


def _page(offers: Sequence[Offer], page: int) -> Sequence[Offer]:
    return offers[page * PAGE : (page + 1) * PAGE]
