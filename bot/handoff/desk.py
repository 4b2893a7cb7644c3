"""Handoff to a human agent: the state machine around the conversation modes, and its policy.

    bot --(flow asks for an agent)--> waiting --(an agent claims)--> agent --(release)--> bot
                                         \\--(user: ボットに戻る)--> bot

Every move is recorded (who, why, when) by `HandoffStore`, which also decides races. The desk
ties the moves to the people involved: it tells the user how long a reply takes or when agents
are back, delivers agents' words on the user's channel, resumes the bot with a message after a
release, and tells every `AgentSurface` (web console, Slack agent channel) what happened.

Time comes in as data (`clock`), so the timeout and agent-hours rules test with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bot.core.ports import AgentRef, AgentSurface, Reply, Sender
from bot.core.service import ConversationService
from bot.errors import AlreadyClaimed, CannedReplyError, DeliveryFailed
from bot.flows.schema import CommandSpec
from bot.handoff.canned import VARIABLES, fill
from bot.handoff.hours import AgentHours, short_when, when
from bot.handoff.summary import summarize
from bot.models import (
    Channel,
    Choice,
    ChoiceIn,
    ChoicesOut,
    ConversationKey,
    ConversationState,
    Event,
    Message,
    Mode,
    ResumeIn,
    StoredMessage,
    TextIn,
    TextOut,
    Turn,
)
from bot.nlu.normalize import normalize
from bot.records import Contact
from bot.store import (
    BookingStore,
    CannedReplyStore,
    Handoff,
    HandoffOutcome,
    HandoffStore,
    Orphan,
    SqlStore,
    StoredConversation,
)

log = logging.getLogger(__name__)


BACK_TO_BOT: Final = "__bot__"
"""Choice id of the ボットに戻る button offered while waiting."""
BACK_TO_BOT_LABEL: Final = "ボットに戻る"
BACK_TO_BOT_WORDS: Final = frozenset(
    normalize(w)
    for w in (
        "ボットに戻る",
        "ボットにもどる",
        "ボットに戻して",
        "ボットに戻りたい",
        "botに戻る",
        "キャンセル",
        "取り消し",
        "取り消す",
    )
)
"""What a waiting user may type instead of tapping the button."""
TRANSPARENT_CHANNELS: Final = frozenset({Channel.WEB, Channel.CLI})
"""Channels that read the transcript themselves (the web chat polls it): nothing to send."""
REPAIR_GRACE: Final = timedelta(minutes=2)
"""How long a conversation may sit out of bot mode without an open handoff before the
watcher repairs it (a listener or release that failed half-way); longer than any live turn."""
WATCH_INTERVAL: Final = 20.0  # seconds between timeout and repair sweeps


# ---------------------------------------------------------------- policy (pure)


def is_back_to_bot(event: Event) -> bool:
    """Whether a waiting user's message withdraws the request."""
    if isinstance(event, ChoiceIn):
        return event.choice == BACK_TO_BOT
    if isinstance(event, TextIn):
        return normalize(event.text) in BACK_TO_BOT_WORDS
    return False


INSTEAD_OF_WAITING: Final = ("book", "leave_contact")
"""Flow commands a user waiting out of hours may take instead: booking a consultation, or
leaving contact details with the message. Taking one withdraws the handoff; the command runs."""


def instead_of_waiting(event: Event, commands: Sequence[CommandSpec]) -> bool:
    """Whether a waiting user's tap (or the label typed) takes one of `commands`."""
    if isinstance(event, ChoiceIn):
        return any(event.choice == c.id for c in commands)
    if isinstance(event, TextIn):
        return any(normalize(event.text) == normalize(c.label) for c in commands)
    return False


def waiting_text(hours: AgentHours, timeout: timedelta, now: datetime) -> str:
    """What a user who just asked for an agent is told, inside or outside agent hours."""
    if hours.is_open(now):
        return (
            f"ふだんは{_minutes(timeout)}ほどで担当者からお返事します。このままお待ちください。"
            f"待つあいだに送ったメッセージも、担当者に届きます。"
        )
    back = when(hours.next_open(now), now)
    return (
        f"ただいま担当者の対応時間外です（対応時間: {hours.describe()}）。"
        f"{back}から、順番にお返事します。"
        "メッセージを残していただければ、担当者が確認してからご連絡します。"
        "日時を決めて話したいときは「面談を予約」もどうぞ。"
    )


def contact_line(contact: Contact) -> str:
    """How agents read a user's contact details: 「山田花子・電話 090-1234-5678」."""
    how = {
        "phone": f"電話 {contact.phone}",
        "email": f"メール {contact.email}",
        "chat": "このチャットで",
    }[contact.method]
    return f"{contact.name}・{how}"


def status_text(mode: Mode, hours: AgentHours, now: datetime) -> str:
    """The web chat's line under the conversation: who the user waits for, and until when."""
    if mode is Mode.AGENT:
        return "担当者と話しています"
    if mode is not Mode.WAITING:
        return ""
    if hours.is_open(now):
        return "担当者を呼んでいます…"
    return f"担当者からの返信待ち（{short_when(hours.next_open(now), now)}〜）"


def timeout_text() -> str:
    # Says only what the bot knows: nobody has answered yet. Whether agents are busy with
    # others, or none is signed in at all, it cannot tell.
    return (
        "お待たせしてすみません。まだ担当者からお返事できていません。"
        "このままお待ちいただくか、メッセージを残してください。担当者が確認しだいお返事します。"
        f"ボットとの相談に戻るときは「{BACK_TO_BOT_LABEL}」と送ってください。"
    )


CANCELLED_TEXT: Final = "担当者へのご依頼を取り消しました。ボットとの相談にもどりますね。"


def timeout_due(requested_at: datetime, hours: AgentHours, timeout: timedelta) -> datetime:
    """When a waiting user is told no agent came: the timeout counts from the request, or,
    outside agent hours, from when agents are back (they were told that time already)."""
    return hours.next_open(requested_at) + timeout


def repair_action(orphan: Orphan) -> Literal["open", "resume"]:
    """What a conversation stuck out of bot mode with no open handoff needs.

    In agent mode, only a release closes the handoff: the resume turn failed, so resume. In
    waiting mode, a cancel that failed before its resume turn left the conversation untouched
    since (the cancel stamped it), so resume; anything newer is a request whose handoff was
    never queued, so queue it."""
    if orphan.mode is Mode.AGENT:
        return "resume"
    cancelled = orphan.last_status is not None and orphan.last_status.value == "cancelled"
    if cancelled and orphan.last_closed_at and orphan.last_closed_at >= orphan.updated_at:
        return "resume"
    return "open"


# ---------------------------------------------------------------- the desk


Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


@dataclass
class HandoffDesk:
    """Runs the handoff moves; the composer's `HandoffHooks` and one of its listeners."""

    store: SqlStore
    handoffs: HandoffStore
    service: ConversationService
    hours: AgentHours
    timeout: timedelta
    spawn: Spawn
    senders: Mapping[Channel, Sender]
    surfaces: Sequence[AgentSurface]  # the runtime's list, likewise
    canned: CannedReplyStore | None = None
    agency: str = ""  # {{agency}} in saved replies
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _watcher: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------ composer hooks

    def waiting_notice(self, conversation: ConversationState) -> tuple[Message, ...]:
        now = self.clock()
        choices = [Choice(id=BACK_TO_BOT, label=BACK_TO_BOT_LABEL)]
        if not self.hours.is_open(now):
            # Nobody answers for a while: a consultation at a set time, or a way to be reached.
            choices[:0] = [Choice(id=c.id, label=c.label) for c in self._instead(conversation)]
        return (
            ChoicesOut(
                text=waiting_text(self.hours, self.timeout, now),
                state=conversation.state,
                choices=tuple(choices),
            ),
        )

    async def cancel(self, stored: StoredConversation, event: Event) -> tuple[Message, ...] | None:
        instead = instead_of_waiting(event, self._instead(stored.state))
        if not is_back_to_bot(event) and not instead:
            return None
        try:
            cancelled = await self.handoffs.cancel(stored.id, now=self.clock())
        except AlreadyClaimed:
            return None  # an agent came first: the words go to them
        if cancelled is not None:
            log.info("handoff %d cancelled by the user", cancelled.id)
            self._tell("cancelled", lambda s: s.cancelled(cancelled))
        # Nothing open (a retried turn, or a queue entry never made): back to the bot all the same.
        if instead:
            return ()  # the flow's booking or contact step says what happens next
        return (TextOut(text=CANCELLED_TEXT),)

    def _instead(self, conversation: ConversationState) -> list[CommandSpec]:
        """The flow's commands offered instead of waiting out of hours (those it has)."""
        spec = self.service.engines.get(conversation.flow, self.service.engine_for(None)).spec
        return [c for c in (spec.command(i) for i in INSTEAD_OF_WAITING) if c is not None]

    async def on_turn(self, key: ConversationKey, reply: Reply, turn: Turn | None) -> None:
        """Service listener: queue a requested handoff; show agents what the user writes."""
        try:
            if reply.handoff is not None and turn is not None:
                await self._open(reply.conversation_id, turn.conversation, reply.handoff.reason)
            elif turn is None and reply.heard and reply.mode is not Mode.BOT:
                handoff = await self.handoffs.open_for(reply.conversation_id)
                if handoff is not None:
                    heard = reply.heard
                    self._tell("user_message", lambda s: s.user_message(handoff, heard))
        except Exception:
            # The user's turn is saved and answered; failing it now would only make the
            # channel retry it. A handoff not queued is queued by `repair` a little later.
            log.exception("after-turn handoff step failed for a %s user", key.channel.value)

    # ------------------------------------------------------------ agent moves

    async def claim(self, handoff_id: int, agent: AgentRef) -> Handoff:
        """Take a waiting handoff; AlreadyClaimed names who has it."""
        handoff = await self.handoffs.claim(
            handoff_id, agent=agent.id, agent_name=agent.name, now=self.clock()
        )
        log.info("handoff %d claimed by %s via %s", handoff.id, agent.id, agent.via or "-")
        self._tell("claimed", lambda s: s.claimed(handoff, agent))
        return handoff

    async def reply(self, handoff_id: int, agent: AgentRef, text: str) -> StoredMessage:
        """Say `text` to the user as `agent`: kept in the transcript, then delivered on the
        user's channel. DeliveryFailed: kept, but the channel did not take it."""
        message = TextOut(text=text)
        stored = await self.handoffs.add_message(
            handoff_id,
            agent=agent.id,
            text=text,
            body={**message.model_dump(mode="json"), "agent": agent.name},
            now=self.clock(),
        )
        handoff = await self.handoffs.get(handoff_id)
        self._tell("agent_message", lambda s: s.agent_message(handoff, stored, agent))
        await self._deliver(
            handoff.key,
            (message,),
            idempotency_key=f"agent-message-{stored.id}",
            sender_name=agent.name,
        )
        return stored

    async def note(self, handoff_id: int, agent: AgentRef, text: str) -> StoredMessage:
        """An internal note on the conversation: agents see it, the user never does."""
        stored = await self.handoffs.add_message(
            handoff_id,
            agent=agent.id,
            text=text,
            body={"type": "note", "text": text, "agent": agent.name},
            note=True,
            now=self.clock(),
        )
        handoff = await self.handoffs.get(handoff_id)
        self._tell("agent_message", lambda s: s.agent_message(handoff, stored, agent))
        return stored

    async def release(
        self, handoff_id: int, agent: AgentRef, *, outcome: HandoffOutcome | None = None
    ) -> tuple[Handoff, Reply]:
        """Hand the conversation back with how it ended: the bot resumes where the flow says,
        and says so."""
        handoff = await self.handoffs.release(
            handoff_id, agent=agent.id, outcome=outcome, now=self.clock()
        )
        reply = await self._resume(handoff.key, idempotency_key=f"handoff-{handoff.id}-resume")
        log.info("handoff %d released by %s", handoff.id, agent.id)
        self._tell("released", lambda s: s.released(handoff))
        return handoff, reply

    async def canned_text(self, handoff_id: int, agent: AgentRef, name: str) -> str:
        """The saved reply `name` filled in for this request, as `agent` would send it.
        CannedReplyError: no such reply, or it needs a value this request lacks."""
        reply = await self.canned.get(name) if self.canned is not None else None
        if reply is None:
            raise CannedReplyError(f"「{name}」という定型文はありません。")
        handoff = await self.handoffs.get(handoff_id)
        text, missing = fill(reply.body, canned_values(handoff, agent, agency=self.agency))
        if missing:
            words = "、".join(VARIABLES.get(m, m) for m in missing)
            raise CannedReplyError(f"定型文「{name}」に入れる値がありません（{words}）。")
        return text

    # ------------------------------------------------------------ the watcher

    def start(self, interval: float = WATCH_INTERVAL) -> None:
        """Run timeouts and repairs in the background until `close`."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(interval))

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None

    async def check_timeouts(self) -> list[int]:
        """Tell each user waiting past the timeout, once; returns their handoff ids."""
        now = self.clock()
        told = []
        for handoff in await self.handoffs.waiting_unnotified():
            if now < timeout_due(handoff.requested_at, self.hours, self.timeout):
                continue
            if not await self.handoffs.mark_timeout_notified(handoff.id, now=now):
                continue  # another process got there first
            await self._say(
                handoff.key,
                handoff.conversation_id,
                TextOut(text=timeout_text()),
                idempotency_key=f"handoff-{handoff.id}-timeout",
            )
            told.append(handoff.id)
        if told:
            log.info("told %d waiting users that no agent came yet", len(told))
        return told

    async def repair(self) -> int:
        """Finish moves that failed half-way (see `repair_action`); returns how many."""
        orphans = await self.handoffs.orphans(older_than=self.clock() - REPAIR_GRACE)
        for orphan in orphans:
            action = repair_action(orphan)
            log.warning(
                "conversation %d is %s without an open handoff: %s",
                orphan.conversation_id,
                orphan.mode.value,
                action,
            )
            if action == "resume":
                stamp = int(self.clock().timestamp())
                await self._resume(
                    orphan.key, idempotency_key=f"repair-{orphan.conversation_id}-{stamp}"
                )
                continue
            stored = await self.store.load(orphan.key)
            if stored is not None:
                await self._open(
                    stored.id, stored.state, "（自動復旧）担当者との相談を希望", who="system"
                )
        return len(orphans)

    # ------------------------------------------------------------ private

    async def _open(
        self, conversation_id: int, state: ConversationState, reason: str, *, who: str = "user"
    ) -> None:
        engine = (
            self.service.engines.get(state.flow) or self.service.engines[self.service.default_flow]
        )
        transcript = await self.store.transcript(conversation_id, limit=200)
        summary = summarize(engine.spec, state, transcript, reason=reason)
        contact = await BookingStore(engine=self.store.engine).contact(conversation_id)
        if contact is not None:  # given with consent, so the agent may use it
            summary["contact"] = contact_line(contact)
        handoff, created = await self.handoffs.open(
            conversation_id, reason=reason, summary=summary, who=who, now=self.clock()
        )
        if created:
            log.info("handoff %d queued", handoff.id)
            self._tell("notify_new", lambda s: s.notify_new(handoff))

    async def _resume(self, key: ConversationKey, *, idempotency_key: str) -> Reply:
        """The bot takes the conversation back (the ResumeIn turn switches the mode) and
        speaks first: the flow's resume state, delivered on the user's channel."""
        reply = await self.service.handle(key, ResumeIn())
        if reply.messages:
            try:
                await self._deliver(key, reply.messages, idempotency_key=idempotency_key)
            except DeliveryFailed:
                log.warning(
                    "resume message of %s not delivered; it is in the transcript", key.channel.value
                )
        return reply

    async def _say(
        self, key: ConversationKey, conversation_id: int, message: TextOut, *, idempotency_key: str
    ) -> None:
        """The bot speaks outside a turn: transcript first, then the channel."""
        await self.handoffs.add_bot_message(
            conversation_id,
            text=message.text,
            body=message.model_dump(mode="json"),
            now=self.clock(),
        )
        try:
            await self._deliver(key, (message,), idempotency_key=idempotency_key)
        except DeliveryFailed:
            log.warning(
                "notice to a %s user not delivered; it is in the transcript", key.channel.value
            )

    async def _deliver(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None:
        if key.channel in TRANSPARENT_CHANNELS:
            return
        sender = self.senders.get(key.channel)
        if sender is None:
            raise DeliveryFailed(f"no sender registered for {key.channel.value}")
        try:
            await sender.send(
                key, list(messages), idempotency_key=idempotency_key, sender_name=sender_name
            )
        except DeliveryFailed:
            raise
        except Exception as error:
            # Only the kind of failure: the message may hold the user's text.
            raise DeliveryFailed(
                f"{key.channel.value} send failed: {type(error).__name__}"
            ) from error

    def _tell(self, move: str, call: Callable[[AgentSurface], Awaitable[None]]) -> None:
        """Tell every surface in the background; one failing never stops the others."""
        for surface in list(self.surfaces):
            self.spawn(self._tell_one(surface, move, call))

    async def _tell_one(
        self, surface: AgentSurface, move: str, call: Callable[[AgentSurface], Awaitable[None]]
    ) -> None:
        try:
            await call(surface)
        except Exception:  # a surface is someone else's code and network: log, carry on
            log.exception("agent surface %s failed on %s", type(surface).__name__, move)

    async def _watch(self, interval: float) -> None:
        while True:
            try:
                await self.check_timeouts()
                await self.repair()
            except Exception:  # the loop must outlive any one bad sweep
                log.exception("handoff watcher: a sweep failed; trying again later")
            await asyncio.sleep(interval)


def canned_values(handoff: Handoff, agent: AgentRef, *, agency: str) -> dict[str, str]:
    """What a saved reply's variables stand for in this request."""
    role = next(
        (
            str(a.get("answer", ""))
            for a in handoff.summary.get("answers", [])
            if a.get("slot") == "role"
        ),
        "",
    )
    return {"name": agent.name, "role": role, "agency": agency}


def _minutes(span: timedelta) -> str:
    minutes = max(1, round(span.total_seconds() / 60))
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes}分"
    return f"{hours}時間{rest}分" if rest else f"{hours}時間"
