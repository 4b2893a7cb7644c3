"""The one composer: load a conversation, consult its mode, run the engine, save, report.

Channels call `handle` with our own event types and render the reply; nothing here knows
about LINE, Slack or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from bot.core.backpressure import Foreground
from bot.core.clock import Clock, SystemClock
from bot.core.facts import turn_facts
from bot.core.group_commit import GroupCommit
from bot.core.ports import Reply
from bot.engine import Engine
from bot.errors import StoreError
from bot.flows.variants import NO_VARIANT, assign
from bot.metrics import Metrics
from bot.models import (
    BookingCancelled,
    BookingEffect,
    BookingRequested,
    Channel,
    Choice,
    ChoiceIn,
    ChoicesOut,
    Classified,
    ContactGiven,
    ConversationKey,
    ConversationState,
    Event,
    Facts,
    FollowUpIn,
    FollowUpScheduled,
    HandoffRequested,
    JoinedGroupIn,
    LeftIn,
    MediaIn,
    Message,
    Mode,
    NeedFacts,
    ResumeIn,
    StartIn,
    TextIn,
    TextOut,
    Turn,
    outbound_text,
)
from bot.records import NewTimer
from bot.store import (
    AlreadyHandled,
    ConcurrentUpdate,
    SavedTurn,
    SqlStore,
    StoredConversation,
    Timer,
    TimerGone,
    TranscriptEntry,
    TurnWrite,
    UnknownConversation,
)
from bot.tracing import annotate, span

log = logging.getLogger(__name__)

_SAVE_ATTEMPTS = 5  # another process may write the same conversation between load and save
# Said to a sticker, photo or other message the bot cannot read; the waiting question follows.
KIND_REPLIES: Final = {
    "sticker": "スタンプありがとうございます！",
    "image": "画像を送ってくださってありがとうございます。",
    "video": "動画を送ってくださってありがとうございます。",
    "audio": "音声を送ってくださってありがとうございます。",
    "file": "ファイルを送ってくださってありがとうございます。",
    "location": "位置情報を送ってくださってありがとうございます。",
}
ASK_FOR_BUTTON: Final = (
    "ごめんなさい、ここでは文字のメッセージだけ読み取れます。"
    "下のボタンをタップするか、文字で答えてくださいね。"
)
ASK_FOR_TEXT: Final = (
    "ごめんなさい、ここでは文字のメッセージだけ読み取れます。文字で送ってくださいね。"
)
GROUP_NOTE: Final = (
    "お招きありがとうございます。このアカウントは1対1でのキャリア相談専用のため、"
    "グループではお話しできません。相談したい方は、友だち追加して個別のトークで話しかけてくださいね。"
)
# How a message the bot cannot read shows in the transcript (agents read it there).
KIND_LINES: Final = {
    "sticker": "（スタンプ）",
    "image": "（画像）",
    "video": "（動画）",
    "audio": "（音声）",
    "file": "（ファイル）",
    "location": "（位置情報）",
}
HANDOFF_BUSY: Final = (
    "ただいま担当者へのお申し込みが続いているため、受け付けられませんでした。"
    "しばらく時間をおいてから、もう一度お試しください。"
)
"""Said instead of queueing a handoff the edge refused (`handle(handoffs_allowed=False)`)."""
FORGET_COMMAND: Final = "forget"
"""The flow command that asks for the user's data to be deleted (「データを削除して」)."""
FORGET_STATE: Final = "__forget__"
FORGET_YES: Final = "__forget_yes__"
FORGET_NO: Final = "__forget_no__"
FORGET_QUESTION: Final = ChoicesOut(
    text=(
        "これまでの会話の記録（回答・やりとり・担当者とのお話）をすべて削除します。"
        "削除すると元に戻せません。よろしいですか？"
    ),
    state=FORGET_STATE,
    choices=(Choice(id=FORGET_YES, label="削除する"), Choice(id=FORGET_NO, label="削除しない")),
)
FORGOTTEN: Final = (
    "記録をすべて削除しました。ご利用ありがとうございました。"
    "また話したくなったら、いつでも声をかけてください。"
)
FORGET_KEPT: Final = "わかりました。削除はしていません。続きからどうぞ。"
_INTERACTIVE: Final = frozenset({Channel.WEB, Channel.CLI})
FOLLOWUP_TIMER: Final = "followup"
"""The kind of the timers a flow's follow-ups schedule (keyed followup:<conversation>:<id>)."""
TURNS_PER_BATCH = 64
"""Turns of different conversations saved in one transaction at most. Under load a batch
costs a fraction of separate transactions; alone, a turn waits one loop turn at most."""


class HandoffHooks(Protocol):
    """What the composer asks of the handoff desk (`bot.handoff.desk.HandoffDesk`)."""

    def waiting_notice(self, conversation: ConversationState) -> tuple[Message, ...]:
        """Said after the flow's own words when a turn asks for an agent: how long it takes."""
        ...

    async def cancel(self, stored: StoredConversation, event: Event) -> tuple[Message, ...] | None:
        """While waiting: if `event` takes the user back to the bot, withdraw the handoff and
        return what to say before the bot resumes; None to keep waiting."""
        ...


class BookingHooks(Protocol):
    """What the composer asks of the booking desk (`bot.core.booking.BookingDesk`)."""

    async def facts(self, conversation_id: int | None) -> Facts:
        """Free slots, the contact given and the open booking, for a booking step."""
        ...

    async def book(self, conversation_id: int, request: BookingRequested, facts: Facts) -> Facts:
        """Book the picked slot; the facts to run the turn again with."""
        ...

    async def apply(self, conversation_id: int, effects: Sequence[BookingEffect]) -> None:
        """Store contact details given and cancellations."""
        ...


_BOOKING_PASSES: Final = 3  # facts, then a booking, then a second try after a lost race


# Called after a turn is saved, for what happens around the conversation (handoff queue, etc.).
TurnListener = Callable[[ConversationKey, Reply, Turn | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class EngineVariant:
    """One A/B variant of a flow, ready to run (see `bot.flows.variants`)."""

    id: str
    weight: int
    engine: Engine


@dataclass
class ConversationService:
    store: SqlStore
    engines: Mapping[str, Engine]
    default_flow: str
    metrics: Metrics = field(default_factory=Metrics)
    # flow id: its A/B variants; a flow absent here runs `engines[flow]` as variant ''.
    variants: Mapping[str, Sequence[EngineVariant]] = field(default_factory=dict)
    listeners: list[TurnListener] = field(default_factory=list)
    hooks: HandoffHooks | None = None
    booking: BookingHooks | None = None
    # Webhook acknowledgements go first: each batch of turns waits for them (bot/core/backpressure.py).
    foreground: Foreground = field(default_factory=Foreground)
    clock: Clock = field(default_factory=SystemClock)  # due times of the follow-ups turns schedule
    # A lock lives while a turn holds or awaits it (the awaiting coroutines keep it referenced),
    # so the map never grows with every user ever seen and never drops a lock in use.
    _locks: weakref.WeakValueDictionary[ConversationKey, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _batches: GroupCommit[_Ask, _Outcome] = field(init=False)

    def __post_init__(self) -> None:
        self._batches = GroupCommit(self._run_batch, max_batch=TURNS_PER_BATCH)

    async def handle(
        self,
        key: ConversationKey,
        event: Event,
        *,
        outbox: bool = False,
        inbox_id: int | None = None,
        reply_token: str | None = None,
        event_at: datetime | None = None,
        existing_only: bool = False,
        handoffs_allowed: bool = True,
        timer: Timer | None = None,
    ) -> Reply:
        """Run one inbound event through the conversation (`existing_only`: raise
        UnknownConversation, writing nothing, unless the conversation exists;
        `handoffs_allowed` False: a request for an agent is answered with HANDOFF_BUSY and the
        conversation stays where it was, as the web chat's rate limit wants; `timer`: the due
        timer this turn fires, marked fired in the turn's transaction, TimerGone (nothing
        written) when it was settled, cancelled or rescheduled first).

        `outbox` queues the reply durably for a channel sender (with the event's `reply_token`
        and time, for a delivery retried after a crash); `inbox_id` marks the recorded webhook
        event processed in the same transaction as the turn, and raises AlreadyHandled (nothing
        written) when someone else marked it first. Turns of different conversations asked for
        together are loaded and saved together (one transaction).
        """
        if isinstance(event, LeftIn | JoinedGroupIn):
            return await self._outside_turn(key, event, inbox_id=inbox_id)
        if (
            isinstance(event, ChoiceIn)
            and event.state == FORGET_STATE
            and event.choice == FORGET_YES
        ):
            return await self._forget(key, inbox_id=inbox_id)
        # The turn's span: its ids go on every log line written while it runs.
        with span("turn", inbox=inbox_id):
            started = time.perf_counter()
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = asyncio.Lock()
            async with lock:
                outcome = await self._batches.submit(
                    _Ask(
                        key=key,
                        event=event,
                        outbox=outbox,
                        inbox_id=inbox_id,
                        reply_token=reply_token,
                        event_at=event_at,
                        existing_only=existing_only,
                        handoffs_allowed=handoffs_allowed,
                        timer=timer,
                    )
                )
            if isinstance(outcome, BaseException):
                raise outcome
            reply, turn = outcome
            annotate(conversation=reply.conversation_id or None)
            channel = key.channel.value
            if not isinstance(event, (StartIn, ResumeIn, FollowUpIn)):
                self.metrics.messages_in.labels(channel=channel).inc()
            self.metrics.messages_out.labels(channel=channel).inc(len(reply.messages))
            self.metrics.turn_seconds.labels(channel=channel).observe(time.perf_counter() - started)
            for listener in self.listeners:
                await listener(key, reply, turn)
            return reply

    async def _outside_turn(
        self, key: ConversationKey, event: LeftIn | JoinedGroupIn, *, inbox_id: int | None
    ) -> Reply:
        """Events that are no turn of a conversation. The inbox event is claimed first, so
        what follows happens at most once, whoever runs it (AlreadyHandled otherwise)."""
        if inbox_id is not None and not await self.store.claim_event(inbox_id):
            raise AlreadyHandled(inbox_id)
        if isinstance(event, LeftIn):
            # Kept until the retention purge deletes it (RETENTION_DAYS after this).
            await self.store.mark_inactive(key)
            return Reply(conversation_id=0, messages=(), mode=Mode.BOT)
        # A group chat: said once, by the channel (no conversation is kept for a group).
        return Reply(conversation_id=0, messages=(TextOut(text=GROUP_NOTE),), mode=Mode.BOT)

    async def _forget(self, key: ConversationKey, *, inbox_id: int | None) -> Reply:
        """The user confirmed 「データを削除して」: everything kept about them is deleted (the
        audit log records that it was), and they are told so."""
        if inbox_id is not None and not await self.store.claim_event(inbox_id):
            raise AlreadyHandled(inbox_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            counts = await self.store.forget_user(key, who="user")
        log.info("a %s user's data was deleted at their request (%s)", key.channel.value, counts)
        return Reply(
            conversation_id=0, messages=(TextOut(text=FORGOTTEN),), mode=Mode.BOT, forgotten=True
        )

    async def announce(
        self, key: ConversationKey, messages: Sequence[Message], *, timer: Timer | None = None
    ) -> Reply:
        """Messages the bot sends unprompted (a timer's reminder): kept in the transcript and,
        for LINE and Slack, queued in the outbox, in one transaction with `timer`'s mark; the
        conversation stays where it is. UnknownConversation when it does not exist."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        bodies = [m.model_dump(mode="json") for m in messages]
        async with lock:
            for attempt in range(_SAVE_ATTEMPTS):
                stored = await self.store.load(key)
                if stored is None:
                    raise UnknownConversation(key)
                write = TurnWrite(
                    key=key,
                    state=stored.state,
                    expected_version=stored.version,
                    conversation_id=stored.id,
                    outbound=_outbound_entries(messages, bodies),
                    deliver=bodies if key.channel not in _INTERACTIVE else None,
                    timer=timer,
                    variant=stored.variant,
                    run_at=stored.run_at,
                )
                (saved,) = await self.store.save_turns([write])
                if isinstance(saved, AlreadyHandled | TimerGone):
                    raise saved
                if isinstance(saved, ConcurrentUpdate):
                    if attempt == _SAVE_ATTEMPTS - 1:
                        raise saved
                    continue
                self.metrics.messages_out.labels(channel=key.channel.value).inc(len(messages))
                return Reply(
                    conversation_id=saved.conversation_id,
                    messages=tuple(messages),
                    mode=stored.mode,
                    outbox_id=saved.outbox_id,
                    last_id=saved.last_message_id,
                )
        raise AssertionError("unreachable")

    def engine_for(
        self, stored: StoredConversation | None, key: ConversationKey | None = None
    ) -> Engine:
        return self.variant_for(stored, key)[1]

    def variant_for(
        self, stored: StoredConversation | None, key: ConversationKey | None = None
    ) -> tuple[str, Engine]:
        """The conversation's variant and engine: the one it was given, kept for good; a new
        conversation's by a hash of its channel and address (the same user, the same one)."""
        flow = stored.state.flow if stored is not None else self.default_flow
        if flow not in self.engines:
            flow = self.default_flow
        variants = self.variants.get(flow)
        if not variants:
            return NO_VARIANT, self.engines[flow]
        if stored is not None and stored.state.flow == flow:
            kept = next((v for v in variants if v.id == stored.variant), None)
            if kept is not None:
                return kept.id, kept.engine
        key = key or (stored.key if stored is not None else None)
        if key is None:
            return variants[0].id, variants[0].engine
        chosen = assign(variants, flow=flow, channel=key.channel.value, address=key.address)
        return chosen.id, chosen.engine

    # ------------------------------------------------------------ turns

    async def _run_batch(self, asks: Sequence[_Ask]) -> list[_Outcome]:
        """One load and one save for the turns of many conversations. A turn that needs more
        (withdrawing a handoff) or lost a race to another writer is run on its own after."""
        if not any(ask.key.channel in _INTERACTIVE for ask in asks):
            # Webhook acknowledgements first; a person waiting on this request (the web chat,
            # the terminal) is foreground work itself.
            await self.foreground.step_aside()
        outcomes: list[_Outcome | None] = [None] * len(asks)
        alone: list[int] = []
        planned: list[tuple[int, _Plan]] = []
        loaded = await self.store.load_many(ask.key for ask in asks)
        keys: set[ConversationKey] = set()
        for index, ask in enumerate(asks):
            stored = loaded.get(ask.key)
            # A conversation once per batch (a caller that gave up may have left its turn in
            # the queue behind the lock it released); a second turn of it runs alone, after.
            if self._may_withdraw(stored) or ask.key in keys:
                alone.append(index)
                continue
            keys.add(ask.key)
            try:
                plan = self._plan(ask, stored, ask.event, said_first=None)
            except Exception as error:  # this turn fails; the others go on
                outcomes[index] = error
                continue
            if _needs_facts(plan):  # a booking step: the desk is asked, on its own
                alone.append(index)
                continue
            planned.append((index, plan))
        if planned:
            try:
                saved = await self.store.save_turns([plan.write for _, plan in planned])
            except StoreError as error:
                # One bad turn (text the database refuses, say) must not fail its batch-mates:
                # each turn is tried on its own, so only the bad one fails.
                if len(planned) > 1:
                    log.warning(
                        "a batch of turns failed (%s); saving each alone", type(error).__name__
                    )
                    alone += [index for index, _ in planned]
                else:
                    outcomes[planned[0][0]] = error
            else:
                for (index, plan), result in zip(planned, saved, strict=True):
                    if isinstance(result, ConcurrentUpdate):
                        alone.append(index)
                    elif isinstance(result, AlreadyHandled | TimerGone):
                        outcomes[index] = result
                    else:
                        self._count(plan.write)
                        outcomes[index] = plan.answer(result)
        for index in sorted(alone):
            try:
                outcomes[index] = await self._run_alone(asks[index])
            except Exception as error:
                outcomes[index] = error
        return [outcome if outcome is not None else RuntimeError("no turn") for outcome in outcomes]

    async def _run_alone(self, ask: _Ask) -> tuple[Reply, Turn | None]:
        """Load, think, save for one conversation, reloading when someone else saved first."""
        for attempt in range(_SAVE_ATTEMPTS):
            stored = await self.store.load(ask.key)
            event: Event = ask.event
            said_first = await self._back_to_bot(stored, event)
            if said_first is not None and not _is_command(self.engine_for(stored), event):
                event = ResumeIn(withdrawn=True)  # the user withdrew: the bot picks up again
            plan = self._plan(ask, stored, event, said_first=said_first)
            if _needs_facts(plan):
                plan = await self._with_facts(ask, stored, event, said_first, plan)
            (saved,) = await self.store.save_turns([plan.write])
            if isinstance(saved, AlreadyHandled | TimerGone):
                raise saved
            if not isinstance(saved, ConcurrentUpdate):
                self._count(plan.write)
                return plan.answer(saved)
            if attempt == _SAVE_ATTEMPTS - 1:
                raise saved
            log.info("a %s conversation changed under us; retrying", ask.key.channel.value)
        raise AssertionError("unreachable")

    async def _with_facts(
        self,
        ask: _Ask,
        stored: StoredConversation | None,
        event: Event,
        said_first: tuple[Message, ...] | None,
        plan: _Plan,
    ) -> _Plan:
        """Run a booking step's turn again with what the desk knows; book the slot it picks
        (again with the outcome, a lost race included); store what it gave or cancelled."""
        if self.booking is None:
            log.warning("a booking step ran without a booking desk; nothing was offered")
            return self._plan(ask, stored, event, said_first=said_first, facts=Facts())
        conversation_id = stored.id if stored else None
        facts = await self.booking.facts(conversation_id)
        for _ in range(_BOOKING_PASSES):
            plan = self._plan(ask, stored, event, said_first=said_first, facts=facts)
            effects = plan.turn.effects if plan.turn else ()
            request = next((e for e in effects if isinstance(e, BookingRequested)), None)
            if request is None or conversation_id is None:
                break
            facts = await self.booking.book(conversation_id, request, facts)
        effects = plan.turn.effects if plan.turn else ()
        given = [e for e in effects if isinstance(e, ContactGiven | BookingCancelled)]
        if given and conversation_id is not None:
            await self.booking.apply(conversation_id, given)
        return plan

    def _plan(
        self,
        ask: _Ask,
        stored: StoredConversation | None,
        event: Event,
        *,
        said_first: tuple[Message, ...] | None,
        facts: Facts | None = None,
    ) -> _Plan:
        """What the turn says and writes (no I/O)."""
        if stored is None and ask.existing_only:
            raise UnknownConversation(ask.key)
        inbound = _inbound_entry(ask.event)
        heard = inbound.text if inbound else None
        mode = stored.mode if stored else Mode.BOT
        withdrawn = said_first is not None  # the user took the bot back from the queue
        if (
            stored is not None
            and mode is not Mode.BOT
            and not isinstance(event, ResumeIn)
            and not withdrawn
        ):
            # An agent owns (or is about to own) the conversation: keep the message, say nothing.
            write = TurnWrite(
                key=ask.key,
                state=stored.state,
                expected_version=stored.version,
                conversation_id=stored.id,
                inbound=[inbound] if inbound else [],
                inbox_id=ask.inbox_id,
                timer=ask.timer,
                variant=stored.variant,
                run_at=stored.run_at,
            )
            return _Plan(write=write, said=(), mode=mode, heard=heard)

        if isinstance(event, MediaIn):
            if stored is not None:
                return self._media_reply(ask, stored, event, inbound, heard)
            # A first message the bot cannot read: thank them and start.
            said_first = (*(said_first or ()), TextOut(text=KIND_REPLIES.get(event.type, "")))
            event = StartIn()
        if isinstance(event, LeftIn | JoinedGroupIn):  # answered by `_outside_turn`
            raise TypeError(f"{event.kind} is not a turn")
        variant, engine = self.variant_for(stored, ask.key)
        previous = stored.state if stored else None
        if previous is not None and previous.flow != engine.spec.flow:
            previous = previous.model_copy(update={"flow": engine.spec.flow, "state": "\0gone"})
        turn = engine.advance(previous, event, facts)
        handoff = next((e for e in turn.effects if isinstance(e, HandoffRequested)), None)
        if _asks_to_forget(engine, event, turn):
            # Confirmed first: the conversation stays where it was until the user says yes.
            kept = stored.state if stored else turn.conversation
            turn = Turn(conversation=kept, messages=(FORGET_QUESTION,))
            handoff = None
        elif isinstance(event, ChoiceIn) and event.state == FORGET_STATE:
            # "No": the engine re-asks the question the user was at (as for an old button).
            stale = engine.spec.texts.stale_button
            again = tuple(
                m for m in turn.messages if not (isinstance(m, TextOut) and m.text == stale)
            )
            turn = turn.model_copy(update={"messages": (TextOut(text=FORGET_KEPT), *again)})
        if handoff is not None and not ask.handoffs_allowed:
            kept = stored.state if stored else engine.advance(None, StartIn()).conversation
            turn = Turn(conversation=kept, messages=(TextOut(text=HANDOFF_BUSY),))
            handoff = None
        new_mode = Mode.WAITING if handoff else Mode.BOT
        notice = self.hooks.waiting_notice(turn.conversation) if handoff and self.hooks else ()
        said = (*(said_first or ()), *turn.messages, *notice)
        for effect in turn.effects:
            if isinstance(effect, Classified):
                log.info(
                    "classified state=%s intents=%s score=%.2f stage=%s",
                    effect.state,
                    ",".join(effect.intents) or "-",
                    effect.score,
                    effect.stage,
                )
        bodies = [m.model_dump(mode="json") for m in said]
        outbound = _outbound_entries(said, bodies)
        now = self.clock.now()
        timers = [
            NewTimer(
                kind=FOLLOWUP_TIMER,
                name=effect.followup,
                due_at=now + timedelta(seconds=effect.after_seconds),
                payload={"followup": effect.followup},
            )
            for effect in turn.effects
            if isinstance(effect, FollowUpScheduled)
        ]
        recorded = turn_facts(
            engine.spec,
            stored.state if stored else None,
            event,
            turn,
            handoff=handoff is not None,
            asked_at=stored.updated_at if stored else None,
            now=now,
        )
        write = TurnWrite(
            key=ask.key,
            state=turn.conversation,
            expected_version=stored.version if stored else None,
            conversation_id=stored.id if stored else None,
            inbound=[inbound] if inbound else [],
            outbound=outbound,
            deliver=bodies if ask.outbox and said else None,
            mode=new_mode if new_mode is not mode else None,
            inbox_id=ask.inbox_id,
            reply_token=ask.reply_token,
            event_at=ask.event_at,
            timer=ask.timer,
            timers=timers,
            variant=variant,
            run_at=stored.run_at if stored else None,
            facts=recorded.facts,
            new_run=recorded.new_run,
        )
        return _Plan(write=write, said=said, mode=new_mode, heard=heard, handoff=handoff, turn=turn)

    def _media_reply(
        self,
        ask: _Ask,
        stored: StoredConversation,
        event: MediaIn,
        inbound: TranscriptEntry | None,
        heard: str | None,
    ) -> _Plan:
        """Thanks, a word that only text is read, and the waiting question again; the
        conversation stays where it is."""
        question = self.engine_for(stored).question(stored.state)
        ask_again = ASK_FOR_BUTTON if question is not None else ASK_FOR_TEXT
        said: tuple[Message, ...] = (TextOut(text=KIND_REPLIES.get(event.type, "") + ask_again),)
        if question is not None:
            said += (question,)
        bodies = [m.model_dump(mode="json") for m in said]
        write = TurnWrite(
            key=ask.key,
            state=stored.state,
            expected_version=stored.version,
            conversation_id=stored.id,
            inbound=[inbound] if inbound else [],
            outbound=_outbound_entries(said, bodies),
            deliver=bodies if ask.outbox else None,
            inbox_id=ask.inbox_id,
            reply_token=ask.reply_token,
            event_at=ask.event_at,
            timer=ask.timer,
            variant=stored.variant,
            run_at=stored.run_at,
        )
        return _Plan(write=write, said=said, mode=Mode.BOT, heard=heard)

    def _count(self, write: TurnWrite) -> None:
        self.metrics.count_facts(write.state, write.variant, write.facts, started=write.new_run)

    def _may_withdraw(self, stored: StoredConversation | None) -> bool:
        return self.hooks is not None and stored is not None and stored.mode is Mode.WAITING

    async def _back_to_bot(
        self, stored: StoredConversation | None, event: Event
    ) -> tuple[Message, ...] | None:
        if self.hooks is None or stored is None or stored.mode is not Mode.WAITING:
            return None
        return await self.hooks.cancel(stored, event)


@dataclass(frozen=True, slots=True)
class _Ask:
    """One `handle` call waiting for its batch."""

    key: ConversationKey
    event: Event
    outbox: bool
    inbox_id: int | None
    reply_token: str | None = None
    event_at: datetime | None = None
    existing_only: bool = False
    handoffs_allowed: bool = True
    timer: Timer | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """A computed turn, before it is saved."""

    write: TurnWrite
    said: tuple[Message, ...]
    mode: Mode
    heard: str | None
    handoff: HandoffRequested | None = None
    turn: Turn | None = None  # None: the bot stayed silent (an agent has the conversation)

    def answer(self, saved: SavedTurn) -> tuple[Reply, Turn | None]:
        reply = Reply(
            conversation_id=saved.conversation_id,
            messages=self.said,
            mode=self.mode,
            handoff=self.handoff,
            outbox_id=saved.outbox_id,
            heard=self.heard,
            last_id=saved.last_message_id,
        )
        return reply, self.turn


_Outcome = tuple[Reply, Turn | None] | Exception


def _outbound_entries(
    said: Sequence[Message], bodies: Sequence[dict[str, Any]]
) -> list[TranscriptEntry]:
    return [
        TranscriptEntry(direction="out", sender="bot", text=outbound_text(m), body=body)
        for m, body in zip(said, bodies, strict=True)
    ]


def _is_command(engine: Engine, event: Event) -> bool:
    """A tap on (or the label of) one of the flow's commands: run as such even when it
    withdrew a handoff (「面談を予約」 offered while waiting out of hours)."""
    if isinstance(event, ChoiceIn):
        return engine.spec.command(event.choice) is not None
    if isinstance(event, TextIn):
        return any(c.label == event.text.strip() for c in engine.spec.commands)
    return False


def _needs_facts(plan: _Plan) -> bool:
    return plan.turn is not None and any(isinstance(e, NeedFacts) for e in plan.turn.effects)


def _asks_to_forget(engine: Engine, event: Event, turn: Turn) -> bool:
    """The flow's `forget` command, typed (understood) or tapped (a rich menu's item)."""
    if engine.spec.command(FORGET_COMMAND) is None:
        return False
    if isinstance(event, ChoiceIn):
        return event.choice == FORGET_COMMAND
    return any(isinstance(e, Classified) and e.intents == (FORGET_COMMAND,) for e in turn.effects)


def _inbound_entry(event: Event) -> TranscriptEntry | None:
    if isinstance(event, MediaIn):
        return TranscriptEntry(
            direction="in",
            sender="user",
            text=KIND_LINES.get(event.type, f"（{event.type}）"),
            body=event.model_dump(mode="json"),
        )
    if isinstance(event, TextIn):
        return TranscriptEntry(
            direction="in", sender="user", text=event.text, body=event.model_dump(mode="json")
        )
    if isinstance(event, ChoiceIn):
        return TranscriptEntry(
            direction="in",
            sender="user",
            text=event.label or event.choice,
            body=event.model_dump(mode="json"),
        )
    return None
