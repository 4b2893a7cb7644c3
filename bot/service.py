"""The one composer: load a conversation, consult its mode, run the engine, save, report.

Channels call `handle` with our own event types and render the reply; nothing here knows
about LINE, Slack or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bot.engine import Engine
from bot.metrics import Metrics
from bot.models import (
    CardOut,
    ChoiceIn,
    ChoicesOut,
    Classified,
    ConversationKey,
    ConversationState,
    HandoffRequested,
    Mode,
    ResumeIn,
    StartIn,
    TextIn,
    TextOut,
    Turn,
    outbound_text,
)
from bot.store.repo import ConcurrentUpdate, SqlStore, StoredConversation, TranscriptEntry

log = logging.getLogger(__name__)

Event = TextIn | ChoiceIn | StartIn | ResumeIn
Message = TextOut | ChoicesOut | CardOut
_SAVE_ATTEMPTS = 5  # another process may write the same conversation between load and save


@dataclass(frozen=True)
class Reply:
    """What one inbound event produced."""

    conversation_id: int
    messages: tuple[Message, ...]
    mode: Mode
    handoff: HandoffRequested | None = None
    outbox_id: int | None = None
    heard: str | None = None  # the user's words this turn, as kept in the transcript


class HandoffHooks(Protocol):
    """What the composer asks of the handoff desk (`bot.handoff.HandoffDesk`)."""

    def waiting_notice(self, conversation: ConversationState) -> tuple[Message, ...]:
        """Said after the flow's own words when a turn asks for an agent: how long it takes."""
        ...

    async def cancel(self, stored: StoredConversation, event: Event) -> tuple[Message, ...] | None:
        """While waiting: if `event` takes the user back to the bot, withdraw the handoff and
        return what to say before the bot resumes; None to keep waiting."""
        ...


# Called after a turn is saved, for what happens around the conversation (handoff queue, etc.).
TurnListener = Callable[[ConversationKey, Reply, Turn | None], Awaitable[None]]


@dataclass
class ConversationService:
    store: SqlStore
    engines: Mapping[str, Engine]
    default_flow: str
    metrics: Metrics = field(default_factory=Metrics)
    listeners: list[TurnListener] = field(default_factory=list)
    hooks: HandoffHooks | None = None
    # A lock lives while a turn holds or awaits it (the awaiting coroutines keep it referenced),
    # so the map never grows with every user ever seen and never drops a lock in use.
    _locks: weakref.WeakValueDictionary[ConversationKey, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    async def handle(
        self,
        key: ConversationKey,
        event: Event,
        *,
        outbox: bool = False,
        inbox_id: int | None = None,
    ) -> Reply:
        """Run one inbound event through the conversation.

        `outbox` queues the reply durably for a channel sender; `inbox_id` marks the recorded
        webhook event processed in the same transaction as the turn.
        """
        started = time.perf_counter()
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            for attempt in range(_SAVE_ATTEMPTS):
                stored = await self.store.load(key)
                try:
                    reply, turn = await self._turn(
                        key, stored, event, outbox=outbox, inbox_id=inbox_id
                    )
                    break
                except ConcurrentUpdate:
                    if attempt == _SAVE_ATTEMPTS - 1:
                        raise
                    log.info("a %s conversation changed under us; retrying", key.channel.value)
        channel = key.channel.value
        if not isinstance(event, (StartIn, ResumeIn)):
            self.metrics.messages_in.labels(channel=channel).inc()
        self.metrics.messages_out.labels(channel=channel).inc(len(reply.messages))
        self.metrics.turn_seconds.labels(channel=channel).observe(time.perf_counter() - started)
        for listener in self.listeners:
            await listener(key, reply, turn)
        return reply

    def engine_for(self, stored: StoredConversation | None) -> Engine:
        if stored is not None and stored.state.flow in self.engines:
            return self.engines[stored.state.flow]
        return self.engines[self.default_flow]

    async def _turn(
        self,
        key: ConversationKey,
        stored: StoredConversation | None,
        event: Event,
        *,
        outbox: bool,
        inbox_id: int | None,
    ) -> tuple[Reply, Turn | None]:
        inbound = _inbound_entry(event)
        heard = inbound.text if inbound else None
        mode = stored.mode if stored else Mode.BOT
        said_first = await self._back_to_bot(stored, event)
        if said_first is not None:  # the user withdrew the request: the bot picks up again
            event = ResumeIn(withdrawn=True)
        if stored is not None and mode is not Mode.BOT and not isinstance(event, ResumeIn):
            # An agent owns (or is about to own) the conversation: keep the message, say nothing.
            saved = await self.store.save_turn(
                key,
                state=stored.state,
                expected_version=stored.version,
                inbound=[inbound] if inbound else [],
                outbound=[],
                inbox_id=inbox_id,
            )
            reply = Reply(
                conversation_id=saved.conversation_id, messages=(), mode=mode, heard=heard
            )
            return reply, None

        engine = self.engine_for(stored)
        previous = stored.state if stored else None
        if previous is not None and previous.flow != engine.spec.flow:
            previous = previous.model_copy(update={"flow": engine.spec.flow, "state": "\0gone"})
        turn = engine.advance(previous, event)
        handoff = next((e for e in turn.effects if isinstance(e, HandoffRequested)), None)
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
        outbound = [
            TranscriptEntry(
                direction="out",
                sender="bot",
                text=outbound_text(m),
                body=m.model_dump(mode="json"),
            )
            for m in said
        ]
        saved = await self.store.save_turn(
            key,
            state=turn.conversation,
            expected_version=stored.version if stored else None,
            inbound=[inbound] if inbound else [],
            outbound=outbound,
            deliver=[m.model_dump(mode="json") for m in said] if outbox and said else None,
            mode=new_mode if new_mode is not mode else None,
            inbox_id=inbox_id,
        )
        reply = Reply(
            conversation_id=saved.conversation_id,
            messages=said,
            mode=new_mode,
            handoff=handoff,
            outbox_id=saved.outbox_id,
            heard=heard,
        )
        return reply, turn

    async def _back_to_bot(
        self, stored: StoredConversation | None, event: Event
    ) -> tuple[Message, ...] | None:
        if self.hooks is None or stored is None or stored.mode is not Mode.WAITING:
            return None
        return await self.hooks.cancel(stored, event)


def _inbound_entry(event: Event) -> TranscriptEntry | None:
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
