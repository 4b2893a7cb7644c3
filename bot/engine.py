"""The pure conversation state machine: (flow, state, inbound) -> (state, messages, effects).

No I/O, no clock, no globals: the same inputs always give the same turn.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Final

from bot.booking.step import PROGRESS, BookStep
from bot.flows.expressions import evaluate, holds, render
from bot.flows.loader import Flow
from bot.flows.schema import (
    BACK,
    PREVIOUS,
    ChoiceSpec,
    CommandSpec,
    FaqSpec,
    FlowSpec,
    MessageSpec,
    QuestionSpec,
    StateSpec,
)
from bot.models import (
    BookingEffect,
    CardField,
    CardOut,
    Choice,
    ChoiceIn,
    ChoicesOut,
    Classified,
    ConversationEnded,
    ConversationState,
    Facts,
    FollowUpIn,
    FollowUpScheduled,
    HandoffRequested,
    ResumeIn,
    StartIn,
    Status,
    TextIn,
    TextOut,
    Turn,
)
from bot.nlu.memo import by_identity
from bot.nlu.normalize import normalize
from bot.nlu.reading import reading
from bot.nlu.understanding import (
    NO,
    YES,
    Understander,
    Understanding,
    keyword_understander,
    yes_or_no,
)

DONE = "__done__"
MAX_BUBBLES: Final = 3
"""Bubbles per turn on a phone: more scroll the first ones away before they are read."""
MAX_CHARS: Final = 180
"""Characters per text bubble (cards excepted): about a phone screen's worth."""
LINE_MAX_MESSAGES: Final = 5  # LINE answers at most 5 messages per reply
HISTORY: Final = "_history"
"""Slot of the questions answered so far (names), for `back`. Underscored slots are the
engine's own: never shown to agents."""
PENDING: Final = "_pending_command"
"""Slot of a command waiting for the user's yes before it forgets or ends anything."""
_MAX_HISTORY: Final = 40
_CONTEXT_NAMES: Final = frozenset(
    {"vars", "label", "booking", "contact", "policy_url", "form", PROGRESS}
)
"""Template names that are not a slot's alone: a slot of such a name rebuilds the context."""
_MAX_HOPS = 100  # a flow whose `next` loops without asking would otherwise never return

Message = TextOut | ChoicesOut | CardOut
Effect = HandoffRequested | ConversationEnded | Classified | FollowUpScheduled | BookingEffect


class Engine:
    """Runs one flow. Holds only immutable data derived from the flow."""

    def __init__(self, flow: Flow, *, understand: Understander = keyword_understander) -> None:
        self.flow = flow
        self.spec: FlowSpec = flow.spec
        self.understand = understand
        self._labels = _labels_by_slot(self.spec)
        self._fallback = next(
            (name for name, s in self.spec.states.items() if s.fallback), self.spec.start
        )
        self._agent_command = next(
            (
                c
                for c in self.spec.commands
                if c.goto in self.spec.states and self.spec.states[c.goto].handoff
            ),
            None,
        )
        self._back_command = next((c for c in self.spec.commands if c.goto == BACK), None)
        self._faqs: dict[str, FaqSpec] = {f.id: f for f in self.spec.faq}
        # The commands each question accepts, as one tuple kept for every turn: the NLU keeps
        # its word tables per tuple of commands. By identity (the question, kept here too).
        self._accepted = {
            id(s.ask): (s.ask, _accepted(s.ask, self.spec.commands))
            for s in self.spec.states.values()
            if s.ask is not None and s.ask.accepts
        }
        self._answer_slots = frozenset(self._labels)
        # Where booking steps lead: about the booking, not a place to come back to later.
        self._after_booking = frozenset(
            s.next for s in self.spec.states.values() if s.book and isinstance(s.next, str)
        )

    def new(self) -> ConversationState:
        return ConversationState(flow=self.spec.flow, flow_version=self.flow.version, state="")

    def advance(
        self,
        conversation: ConversationState | None,
        event: TextIn | ChoiceIn | StartIn | ResumeIn | FollowUpIn,
        facts: Facts | None = None,
    ) -> Turn:
        """The next turn of `conversation` (None: a new one) given what the user did.

        `facts`: what the service knows for booking steps; a turn that needs them and got
        None ends at once with a `NeedFacts` effect, and the service runs it again with them."""
        turn = _TurnBuilder(self, conversation or self.new(), facts)
        if conversation is None or turn.conv.state == "":
            # A first message that is not a start (e.g. text typed at once) still gets the greeting.
            turn.enter(self.spec.start)
            if not isinstance(event, (TextIn, ChoiceIn)):
                return turn.result()
            turn.first_turn = True
        turn.update(flow_version=self.flow.version)
        if turn.conv.state not in self.spec.states:
            turn.say(self.spec.texts.flow_changed)
            turn.enter(self._fallback)
            return turn.result()
        match event:
            case StartIn(returning=True) if self.spec.returning:
                turn.remember_question()
                turn.enter(self.spec.returning)
            case StartIn():
                turn.enter(self.spec.start, reset=True)
            case ResumeIn(withdrawn=True):
                turn.back_to_previous()
            case ResumeIn():
                turn.resume()
            case FollowUpIn():
                turn.follow_up(event.followup)
            case ChoiceIn():
                turn.on_choice(event)
            case TextIn():
                turn.on_text(event.text)
        return turn.result()

    def holds(self, conversation: ConversationState, expression: str | None) -> bool:
        """Whether `expression` holds over the conversation's slots (a follow-up's `if`)."""
        return holds(expression, _TurnBuilder(self, conversation).context())

    def question(self, conversation: ConversationState) -> ChoicesOut | None:
        """The question the conversation is waiting on, rendered (e.g. to show it again)."""
        state = self.spec.states.get(conversation.state)
        if state is None or state.ask is None:
            return None
        return _TurnBuilder(self, conversation).render_question(conversation.state, state.ask)


class _TurnBuilder:
    """Accumulates one turn: the evolving state, messages and effects."""

    def __init__(
        self, engine: Engine, conversation: ConversationState, facts: Facts | None = None
    ) -> None:
        self.engine = engine
        self.spec = engine.spec
        self.begun = conversation
        self.conv = _Draft(conversation)
        self.facts = facts
        self.messages: list[Message] = []
        self.effects: list[Effect] = []
        # The user's very first message (e.g. 「こんにちは」) was not an answer to anything yet:
        # only the greeting replies to it, unless it already answers the first question.
        self.first_turn = False
        self.entered: list[str] = []
        self.origin = conversation.state  # where the user was when this turn began
        self.offer_back = False  # an answer read from typed text was restated: offer 「戻る」
        self.answered_question: ChoicesOut | None = None  # shown, then answered in this turn
        # Templates read the slots many times a turn; the context is rebuilt only when the slots
        # (a new dict on every change, see `fill`) are not the ones it was built from.
        self._context: tuple[dict[str, Any], dict[str, Any]] | None = None

    # ------------------------------------------------------------ events

    def on_choice(self, event: ChoiceIn) -> None:
        pending = self.conv.slots.get(PENDING)
        if pending and event.choice in (YES, NO):
            self.on_pending(str(pending), event.choice == YES)
            return
        self.drop_pending()
        # A rich menu's postback names a command by id, or by its words (「面談を予約」).
        command = self.spec.command(event.choice) or self.spec.command_labelled(event.choice)
        if command is not None:
            self.run_command(command)
            return
        state = self.current()
        step = self.book_step()
        if step is not None:
            if event.state is not None and event.state != self.conv.state:
                self.say(self.spec.texts.stale_button)
                step.ask()
            else:
                step.on_choice(event.choice)
            return
        if state.ask and event.state is not None and event.state != self.conv.state:
            self.say(self.spec.texts.stale_button)
            self.reask()
            return
        if self.conv.pending_confirm and event.choice in (YES, NO):
            self.on_confirm(event.choice == YES)
            return
        self.update(pending_confirm=())  # answered otherwise: the guess is no longer in question
        if state.ask is None:
            self.on_idle()
            return
        if state.ask.multi and event.choice == DONE:
            self.finish_multi(state.ask)
            return
        choice = next((c for c in state.ask.choices if c.id == event.choice), None)
        if choice is None:
            self.say(self.spec.texts.stale_button)
            self.reask()
            return
        self.answer(state.ask, (choice.id,))

    def on_text(self, text: str) -> None:
        state = self.current()
        ask = state.ask
        pending = self.conv.slots.get(PENDING)
        if pending:
            verdict = yes_or_no(text)
            if verdict is not None:
                self.on_pending(str(pending), verdict == YES)
                return
            self.drop_pending()
        if self.conv.pending_confirm:
            verdict = yes_or_no(text)
            if verdict is not None:
                self.on_confirm(verdict == YES)
                return
            self.update(pending_confirm=())  # answered otherwise: the guess is dropped
        step = self.book_step()
        if step is not None:
            step.on_text(text)
            return
        commands = self._commands_for(ask)
        understood = self.engine.understand(
            text,
            choices=ask.choices if ask else (),
            commands=commands,
            multi=bool(ask and ask.multi),
            faqs=self.spec.faq,
        )
        if ask is not None or understood.command:  # idle chatter after the end is not logged
            intents = (understood.command,) if understood.command else understood.intents
            self.effects.append(
                Classified(
                    state=self.conv.state,
                    intents=intents,
                    score=understood.score,
                    stage=understood.stage,
                )
            )
        command = self.spec.command(understood.command) if understood.command else None
        if command is not None:
            if self.first_turn and command.reset:
                return  # 「はじめる」 as a first message: the greeting just given is the start
            if pending == command.id:  # the same command again: that is a yes
                self.run_command(command, confirmed=True)
                return
            self.run_command(command)
            return
        faq = self.engine._faqs.get(understood.faq or "")
        if faq is not None:
            self.on_faq(faq)
            return
        if ask is None:
            self.on_idle()
            return
        if ask.multi and understood.intents == () and _is_done_text(text, ask):
            self.finish_multi(ask)
            return
        if not understood.intents:
            if not self.first_turn:
                self.miss(ask)
            return
        if understood.confirm:
            self.ask_confirm(ask, understood.intents)
            return
        self.answer(ask, understood.intents, typed=text)

    def on_confirm(self, agreed: bool) -> None:
        ask = self.current().ask
        guessed = self.conv.pending_confirm
        self.update(pending_confirm=())
        if ask is None:
            self.on_idle()
        elif agreed:
            self.answer(ask, guessed)
        else:
            self.miss(ask)

    def on_idle(self) -> None:
        """Input where no question waits: after the end, ask whether to go on (the flow's
        `again`, else its `returning`); otherwise move on."""
        state = self.current()
        if state.end or self.conv.status is Status.ENDED:
            target = self.spec.again or self.spec.returning
            self.enter(target or self.spec.start, reset=target is None)
        else:
            self.resume()

    def on_faq(self, faq: FaqSpec) -> None:
        """Answer a question to the bot, then the question waits on (a first message: the
        greeting's question comes after the answer, not before it)."""
        if self.first_turn and self.messages and isinstance(self.messages[-1], ChoicesOut):
            self.messages.pop()
            if faq.kind == "small_talk":  # the greeting already answered 「こんにちは」
                self.reask()
                return
        for text in faq.say:
            self.say(text)
        if self.current().ask is not None:
            self.reask()
        else:
            self.on_idle()

    def on_pending(self, command_id: str, agreed: bool) -> None:
        self.drop_pending()
        command = self.spec.command(command_id)
        if agreed and command is not None:
            self.run_command(command, confirmed=True)
            return
        self.say(self.spec.texts.cancelled)
        if self.current().ask is not None:
            self.reask()
        else:
            self.on_idle()

    def drop_pending(self) -> None:
        if PENDING in self.conv.slots:
            self.update(slots={k: v for k, v in self.conv.slots.items() if k != PENDING})

    def go_back(self) -> None:
        """Back one question: the answers before it stay, its own answer is shown again."""
        history = [h for h in self.conv.slots.get(HISTORY, []) if h in self.spec.states]
        while history and history[-1] == self.conv.state:
            history.pop()
        if not history:
            self.say(self.spec.texts.back_at_start)
            self.reask()
            return
        name = history.pop()
        ask = self.spec.states[name].ask
        if ask is None:
            self.reask()
            return
        self.fill(HISTORY, history)
        self.say(self.spec.texts.back)
        previous = self.conv.slots.get(ask.slot)
        selection = tuple(previous) if ask.multi and isinstance(previous, list) else ()
        self.update(
            state=name,
            status=Status.ACTIVE,
            selection=selection,
            misses=0,
            pending_confirm=(),
        )
        self.entered.append(name)
        self.messages.append(self.render_question(name, ask))

    def schedule_followups(self, *, entered: str = "", command: str = "") -> None:
        """The flow's follow-ups this state or command schedules, where their `if` holds."""
        for followup in self.spec.followups:
            triggered = (entered and followup.entered == entered) or (
                command and followup.command == command
            )
            if triggered and holds(followup.if_, self.context()):
                seconds = int(followup.wait.total_seconds())
                self.effects.append(FollowUpScheduled(followup=followup.id, after_seconds=seconds))

    def follow_up(self, followup_id: str) -> None:
        """A declared follow-up is due: the user is taken to its state (and can come back to
        the question they had left, '@previous'). Gone from the flow: nothing is said."""
        followup = self.spec.followup(followup_id)
        if followup is None or followup.goto not in self.spec.states:
            return
        self.remember_question()
        self.enter(followup.goto)

    def resume(self) -> None:
        state = self.current()
        target = self.spec.resume or (self._next(state) if state.next else None)
        self.enter(target or self.spec.start)

    # ------------------------------------------------------------ answers

    def answer(self, ask: QuestionSpec, intents: Sequence[str], *, typed: str = "") -> None:
        if ask.multi:
            picked = [c.id for c in ask.choices if c.id in set(self.conv.selection) | set(intents)]
            self.update(selection=tuple(picked), misses=0)
            if typed:
                self.capture(ask, typed)
            self.messages.append(self.render_question(self.conv.state, ask, prompt=False))
            return
        choice = next((c for c in ask.choices if c.id == intents[0]), None)
        if choice is None:  # an understander named something this question does not offer
            self.miss(ask)
            return
        if self.first_turn and self.messages and isinstance(self.messages[-1], ChoicesOut):
            # A first message that answers: its question may go if the turn runs long.
            self.answered_question = self.messages[-1]
        if typed:
            self.capture(ask, typed)
            if ask.echo and not _says_it(typed, choice) and choice.goto is None:
                self.say(self.spec.texts.echo, answer=choice.label)
                self.offer_back = self.engine._back_command is not None
        self.fill(ask.slot, choice.id)
        self.remember_answered()
        self.leave(choice)

    def finish_multi(self, ask: QuestionSpec) -> None:
        if len(self.conv.selection) < ask.min_selected:
            self.say(self.spec.texts.need_selection, done=ask.done_label)
            self.reask()
            return
        self.fill(ask.slot, list(self.conv.selection))
        self.update(selection=())
        self.remember_answered()
        self.leave(None)

    def capture(self, ask: QuestionSpec, typed: str) -> None:
        """Details typed with an answer (「経理で3年目」) fill the question's capture slots."""
        text = unicodedata.normalize("NFKC", typed)
        for slot, pattern in ask.capture.items():
            found = re.search(pattern, text)
            if found:
                self.fill(slot, found.group(1) if found.groups() else found.group(0))

    def remember_answered(self) -> None:
        """The question just answered, for `back`."""
        history = [*self.conv.slots.get(HISTORY, []), self.conv.state][-_MAX_HISTORY:]
        self.fill(HISTORY, history)

    def ask_confirm(self, ask: QuestionSpec, intents: Sequence[str]) -> None:
        by_id = {c.id: c for c in ask.choices}
        guess = "」「".join(by_id[i].confirm or by_id[i].label for i in intents)
        self.update(pending_confirm=tuple(intents))
        texts = self.spec.texts
        self.messages.append(
            ChoicesOut(
                text=self.render(texts.confirm, guess=guess),
                state=self.conv.state,
                choices=(
                    Choice(id=YES, label=texts.confirm_yes),
                    Choice(id=NO, label=texts.confirm_no),
                ),
            )
        )

    def miss(self, ask: QuestionSpec) -> None:
        misses = self.conv.misses + 1
        self.update(misses=misses)
        texts = self.spec.texts
        if misses >= self.spec.max_misses:
            self.say(texts.still_not_understood)
            self.messages.append(self.render_question(self.conv.state, ask, offer_agent=True))
        else:
            self.say(texts.not_understood)
            self.messages.append(self.render_question(self.conv.state, ask))

    def reask(self) -> None:
        step = self.book_step()
        if step is not None:
            step.ask()
            return
        ask = self.current().ask
        if ask is not None:
            self.messages.append(self.render_question(self.conv.state, ask))

    def run_command(self, command: CommandSpec, *, confirmed: bool = False) -> None:
        if command.confirm and not confirmed and self.has_answers():
            self.ask_first(command)
            return
        if command.goto == BACK:
            self.update(pending_confirm=())
            self.go_back()
            return
        for slot, expression in command.set.items():
            self.fill(slot, evaluate(expression, self.context()))
        self.schedule_followups(command=command.id)
        for text in command.say:
            self.say(text)
        self.update(pending_confirm=())
        if command.goto:
            self.enter(command.goto, reset=command.reset)
        else:
            self.reask()

    def ask_first(self, command: CommandSpec) -> None:
        """「ここまでの答えが消えますが…」 [はい] [いいえ、続ける] before a command acts."""
        assert command.confirm is not None
        self.fill(PENDING, command.id)
        texts = self.spec.texts
        self.messages.append(
            ChoicesOut(
                text=self.render(command.confirm),
                state=self.conv.state,
                choices=(
                    Choice(id=YES, label=texts.confirm_go),
                    Choice(id=NO, label=texts.confirm_stay),
                ),
            )
        )

    def has_answers(self) -> bool:
        """Whether a question is waiting and something was answered already."""
        if self.current().ask is None or self.conv.status is Status.ENDED:
            return False
        return bool(self.conv.selection) or any(
            s in self.engine._answer_slots for s in self.conv.slots
        )

    # ------------------------------------------------------------ moving

    def remember_question(self) -> None:
        """Keep the question the user was at when this turn began, for '@previous'."""
        state = self.spec.states.get(self.origin)
        # The welcome-back and after-agent questions are about the return itself, not a place
        # to return to: from there, '@previous' falls back to the flow's own routing.
        if self.origin in (self.spec.returning, self.spec.resume) or self.origin in (
            self.engine._after_booking
        ):
            self.update(return_to=None)
        elif state and state.ask:
            self.update(return_to=self.origin)

    def back_to_previous(self) -> None:
        name = self.conv.return_to
        self.update(return_to=None)
        state = self.spec.states.get(name) if name else None
        if name is None or state is None or state.ask is None:
            self.enter(self.engine._fallback)
        else:
            self.enter(name)

    def leave(self, choice: ChoiceSpec | None) -> None:
        if choice and choice.goto == PREVIOUS:
            self.back_to_previous()
            return
        state = self.current()
        target = choice.goto if choice and choice.goto else self._next(state)
        self.enter(target, reset=bool(choice and choice.reset))

    def enter(self, name: str, *, reset: bool = False) -> None:
        if reset:
            self.update(slots={}, status=Status.ACTIVE, return_to=None)
        self.drop_pending()
        cleared: dict[str, Any] = {"selection": (), "misses": 0, "pending_confirm": ()}
        for _ in range(_MAX_HOPS):
            state = self.spec.states[name]
            self.entered.append(name)
            self.update(state=name, status=Status.ACTIVE, **cleared)  # one copy, not two
            cleared = {}
            for slot, expression in state.set.items():
                self.fill(slot, evaluate(expression, self.context()))
            self.schedule_followups(entered=name)
            for message in _said(state):
                if message.if_ is not None and not holds(message.if_, self.context()):
                    continue
                if message.text is not None:
                    self.say(message.text)
                elif message.card is not None:
                    self.messages.append(self.render_card(message.card))
            if state.ask:
                self.messages.append(self.render_question(name, state.ask))
                return
            if state.book:
                self.remember_question()  # 「続きから」 after booking goes back there
                BookStep(self, name, state.book, self.spec).enter()
                return
            if state.handoff or state.end:
                self.remember_question()  # coming back later, the user may pick up here
            if state.handoff:
                self.effects.append(HandoffRequested(reason=self.render(state.handoff.reason)))
                return
            if state.end:
                self.update(status=Status.ENDED)
                self.effects.append(ConversationEnded())
                return
            name = self._next(state)
        raise RuntimeError(f"flow '{self.spec.flow}' loops at state '{name}' without asking")

    def _next(self, state: StateSpec) -> str:
        if isinstance(state.next, str):
            return state.next
        context = self.context()
        for branch in state.next or ():
            if holds(branch.if_, context):
                return branch.goto
        return self.spec.start  # the linter rejects flows that reach this

    # ------------------------------------------------------------ rendering

    def render_question(
        self, name: str, ask: QuestionSpec, *, prompt: bool = True, offer_agent: bool = False
    ) -> ChoicesOut:
        picked = set(self.conv.selection) if ask.multi else set()
        choices = list(_buttons(ask))
        if picked:
            choices = [
                c.model_copy(update={"selected": True}) if c.id in picked else c for c in choices
            ]
        agent = self.engine._agent_command
        if offer_agent and agent and self._accepts(ask, agent.id):
            choices.append(Choice(id=agent.id, label=agent.label))
        back = self.engine._back_command
        if self.offer_back and back and self._accepts(ask, back.id) and prompt:
            choices.append(Choice(id=back.id, label=back.label))
        if prompt:
            text = self.render(ask.text)
        else:  # a multi-select after a pick: say what is chosen so far instead of asking again
            chosen = "」「".join(c.label for c in ask.choices if c.id in picked)
            text = self.render(self.spec.texts.selected_so_far, picked=chosen, done=ask.done_label)
        return ChoicesOut(text=text, state=name, choices=tuple(choices), multi=ask.multi)

    def render_card(self, card: Any) -> CardOut:
        context = self.context()
        fields = []
        for f in card.fields:
            value = render(f.value, context)
            if value:
                fields.append(CardField(label=render(f.label, context), value=value))
        return CardOut(
            title=render(card.title, context),
            fields=tuple(fields),
            footer=render(card.footer, context),
        )

    def render(self, source: str, **extra: Any) -> str:
        if "{" not in source:
            return source  # plain text: no context to build
        return render(source, {**self.context(), **extra} if extra else self.context())

    def say(self, source: str, **extra: Any) -> None:
        text = self.render(source, **extra)
        if text:
            self.messages.append(TextOut(text=text))

    def context(self) -> dict[str, Any]:
        slots = self.conv.slots
        if self._context is not None and self._context[0] is slots:
            return self._context[1]
        labels: dict[str, Any] = {}
        for slot, value in slots.items():
            names = self.engine._labels.get(slot)
            if names is None:
                continue
            labels[slot] = (
                [names.get(v, v) for v in value]
                if isinstance(value, list)
                else names.get(value, value)
            )
        context = {**slots, "vars": self.spec.vars, "label": labels}
        if self.facts is not None:
            context["booking"] = self.facts.booking.model_dump() if self.facts.booking else {}
            context["contact"] = self.facts.contact.model_dump() if self.facts.contact else {}
            context["policy_url"] = self.facts.policy_url
        progress = slots.get(PROGRESS)
        if isinstance(progress, dict):  # the contact form's answers so far, for its texts
            context["form"] = progress
        self._context = (slots, context)
        return context

    # ------------------------------------------------------------ booking steps

    def book_step(self) -> BookStep | None:
        state = self.current()
        if state.book is None:
            return None
        return BookStep(self, self.conv.state, state.book, self.spec)

    def understand(
        self, text: str, choices: Sequence[ChoiceSpec], *, faqs: bool = True
    ) -> Understanding:
        return self.engine.understand(
            text,
            choices=choices,
            commands=self.spec.commands,
            multi=False,
            faqs=self.spec.faq if faqs else (),
        )

    def answer_faq(self, faq_id: str) -> bool:
        faq = self.engine._faqs.get(faq_id)
        if faq is None:
            return False
        for text in faq.say:
            self.say(text)
        return True

    def leave_book(self) -> None:
        """A book step is done: on to its state's `next`."""
        self.enter(self._next(self.current()))

    # ------------------------------------------------------------ state

    def current(self) -> StateSpec:
        return self.spec.states[self.conv.state]

    def fill(self, slot: str, value: Any) -> None:
        before = self.conv.slots
        self.update(slots={**before, slot: value})
        cached = self._context
        if cached is None or cached[0] is not before or slot in _CONTEXT_NAMES:
            return
        # The template context of the slots before, with this one changed: a turn fills a few
        # slots in a row and renders between them, and rebuilding it whole each time (every
        # slot's label) was a tenth of a turn.
        context = {**cached[1], slot: value}
        names = self.engine._labels.get(slot)
        if names is not None:
            shown = (
                [names.get(v, v) for v in value]
                if isinstance(value, list)
                else names.get(value, value)
            )
            context["label"] = {**context["label"], slot: shown}
        self._context = (self.conv.slots, context)

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.conv, name, value)

    def _commands_for(self, ask: QuestionSpec | None) -> tuple[CommandSpec, ...]:
        if ask is None or not ask.accepts:
            return self.spec.commands
        known = self.engine._accepted.get(id(ask))
        if known is not None and known[0] is ask:
            return known[1]
        return _accepted(ask, self.spec.commands)

    def _accepts(self, ask: QuestionSpec, command_id: str) -> bool:
        command = self.spec.command(command_id)
        return not ask.accepts or command_id in ask.accepts or bool(command and command.everywhere)

    def result(self) -> Turn:
        messages = _fit_bubbles(self.messages)
        if len(messages) > MAX_BUBBLES and self.answered_question is not None:
            messages = _fit_bubbles([m for m in self.messages if m is not self.answered_question])
        return Turn(
            conversation=self.conv.finished(self.begun),
            messages=messages,
            effects=tuple(self.effects),
            entered=tuple(self.entered),
        )


def _accepted(ask: QuestionSpec, commands: tuple[CommandSpec, ...]) -> tuple[CommandSpec, ...]:
    return tuple(c for c in commands if c.id in ask.accepts or c.everywhere)


class _Draft:
    """The conversation as a turn changes it, in plain attributes: a turn changes it a few
    times, and copying the frozen model at each change was a fifth of a turn."""

    __slots__ = tuple(ConversationState.model_fields)
    flow: str
    flow_version: str
    state: str
    slots: dict[str, Any]
    selection: tuple[str, ...]
    misses: int
    pending_confirm: tuple[str, ...]
    return_to: str | None
    status: Status

    def __init__(self, conversation: ConversationState) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(conversation, name))

    def finished(self, begun: ConversationState) -> ConversationState:
        """`begun` with this turn's changes: the same object when nothing changed."""
        changed = {
            name: getattr(self, name)
            for name in self.__slots__
            if getattr(self, name) != getattr(begun, name)
        }
        return begun.model_copy(update=changed) if changed else begun


def _labels_by_slot(spec: FlowSpec) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    for state in spec.states.values():
        if state.ask:
            labels.setdefault(state.ask.slot, {}).update({c.id: c.label for c in state.ask.choices})
    return labels


def _is_done_text(text: str, ask: QuestionSpec) -> bool:
    """「以上です」「これで全部かな」「これでぜんぶ」: the user finishes a multi-select in words."""
    typed = {normalize(text), reading(text)}
    words = {normalize(ask.done_label), reading(ask.done_label), *_done_words()}
    return any(t.startswith(w) and len(t) <= len(w) + 4 for t in typed for w in words if w)


_DONE_WORDS = ("以上", "おわり", "終わり", "これだけ", "これで全部", "それだけ", "ok", "done")


@functools.cache
def _done_words() -> frozenset[str]:
    """Written and read (kana) forms; worked out at first use, not at import (no dictionary
    load for a process that never sees a multi-select)."""
    return frozenset(normalize(w) for w in _DONE_WORDS) | frozenset(reading(w) for w in _DONE_WORDS)


def _says_it(typed: str, choice: ChoiceSpec) -> bool:
    """Whether the typed text holds the choice's own label, keyword or example, so the answer
    needs no restating (「経理です」, 「うん」); 「もう限界」 read as 「転職も考えたい」 does."""
    norm, read = normalize(typed), reading(typed)
    return any(t in norm or t in read for t in _choice_terms(choice))


@by_identity
def _said(state: StateSpec) -> tuple[MessageSpec, ...]:
    """A state's messages as models: once per state, not at each entry."""
    return state.messages()


@by_identity
def _buttons(ask: QuestionSpec) -> tuple[Choice, ...]:
    """A question's buttons, none picked (and 'done' for a multi-select): built once per question,
    as they are the same for everyone (the models are frozen)."""
    buttons = tuple(Choice(id=c.id, label=c.label) for c in ask.choices)
    return (*buttons, Choice(id=DONE, label=ask.done_label)) if ask.multi else buttons


@by_identity
def _choice_terms(choice: ChoiceSpec) -> frozenset[str]:
    """A choice's label, keywords and examples, as written and as read: once per choice."""
    words = [w for w in (choice.label, *choice.keywords, *choice.examples) if w]
    return frozenset(t for t in {normalize(w) for w in words} | {reading(w) for w in words} if t)


def _fit_bubbles(messages: list[Message]) -> tuple[Message, ...]:
    """Merge neighbouring texts until the turn fits in MAX_BUBBLES, as long as a merged bubble
    stays within MAX_CHARS (beyond LINE's 5 messages, whatever their length)."""
    merged = list(messages)
    while len(merged) > MAX_BUBBLES:
        pairs = [
            (len(a.text) + len(b.text), i)
            for i, (a, b) in enumerate(itertools.pairwise(merged))
            if isinstance(a, TextOut) and isinstance(b, TextOut)
        ]
        fitting = [p for p in pairs if p[0] + 1 <= MAX_CHARS]
        if not fitting and len(merged) <= LINE_MAX_MESSAGES:
            break
        if not (fitting or pairs):
            break
        _, i = min(fitting or pairs)
        a, b = merged[i], merged[i + 1]
        assert isinstance(a, TextOut) and isinstance(b, TextOut)
        merged[i : i + 2] = [TextOut(text=f"{a.text}\n{b.text}")]
    return tuple(merged)
