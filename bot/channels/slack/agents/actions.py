"""The Slack agent channel (`SLACK_AGENT_CHANNEL`): a card per handoff, its thread, and what
agents do there.

    a handoff is queued    -> a card in the channel (summary, transcript link, [対応する]); its ts
                              is stored as the handoff's "slack" ref: the card's thread is the
                              conversation's
    [対応する] / [Botに戻す] -> recorded like any Slack event -> worker -> desk.claim / desk.release
    a reply in the thread   -> recorded -> worker -> desk.reply (the holder's only), or
                              desk.note when it starts with `//`
    any move, the user's words, an agent's words elsewhere -> the card re-rendered, a thread line

Agents' requests ride the Slack channel's durable path: its recording middleware asks
`SlackAgentActions.recognise` first and records what it returns in the inbox, unique by event
id, so a retried or duplicated request is acted on once; the worker hands the recorded request
back to `SlackAgentActions`. The desk tells `SlackAgentSurface` about every move, whoever made
it (this channel, the console, the API), and the card is always rendered from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack.agents.blocks import (
    CANNED_MARKS,
    NOTE_MARK,
    SLACK_AGENT_PREFIX,
    agent_said,
    booking_card,
    cancelled_note,
    card,
    claimed_note,
    holder,
    mention,
    recent,
    released_note,
    user_said,
)
from bot.channels.slack.agents.events import (
    SURFACE,
    AgentClick,
    AgentPost,
    AgentRequest,
    parse_agent,
)
from bot.channels.slack.blocks import SlackMessage
from bot.channels.slack.web_api import SlackApiFailure, call
from bot.config import Settings
from bot.core.ports import AgentDesk, AgentRef, HandoffRefs, InboxEvent
from bot.errors import (
    AlreadyClaimed,
    CannedReplyError,
    DeliveryFailed,
    HandoffClosed,
    NotHolder,
    UnknownHandoff,
)
from bot.models import StoredMessage
from bot.records import Booking, Handoff, HandoffStatus

log = logging.getLogger(__name__)

REF: Final = "slack"
"""The handoffs' surface ref: `ref` is the card's ts, `data` its channel and the notes posted."""
VIA: Final = "slack"
MAX_TEXT: Final = 2000
"""Characters of a reply or note taken from Slack, as the agent API accepts."""
NAME_TTL: Final = 3600.0
"""Seconds an agent's Slack display name is remembered (users.info is rate limited)."""
FALLBACK_NAME: Final = "担当者"
"""What the user sees as the sender when Slack does not tell us the agent's name."""

REFUSED: Final = "この操作は登録された担当者だけができます。何も変更していません。"
ELSEWHERE: Final = "このボタンは担当者チャンネルでだけ使えます。何も変更していません。"
NOT_SENT: Final = "この返信はユーザーに届いていません。"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentChannelConfig:
    """Where agents work and who may act there (empty `users`: anyone in the channel)."""

    channel: str
    users: frozenset[str]
    public_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentChannelConfig | None:
        channel = settings.slack_agent_channel.strip()
        if not channel:
            return None
        if not channel.startswith(("C", "G")):
            # Events carry ids, never names: a name would match nothing and agents would wait.
            log.error(
                "SLACK_AGENT_CHANNEL must be the channel's id (C… or G…), not its name; "
                "the Slack agent channel is off"
            )
            return None
        users = frozenset(u.strip() for u in settings.slack_agent_users.split(",") if u.strip())
        return cls(channel=channel, users=users, public_url=settings.public_url.rstrip("/"))

    def allows(self, user: str) -> bool:
        return not self.users or user in self.users

    def link(self, handoff_id: int) -> str | None:
        """The conversation's page in the web console, if the server's public URL is known."""
        return f"{self.public_url}/console/handoffs/{handoff_id}" if self.public_url else None


def start(
    *, client: AsyncWebClient, settings: Settings, desk: AgentDesk
) -> SlackAgentActions | None:
    """Open the agent channel if SLACK_AGENT_CHANNEL is set (its `surface` is for the desk)."""
    config = AgentChannelConfig.from_settings(settings)
    if config is None:
        return None
    surface = SlackAgentSurface(client=client, handoffs=desk.handoffs, config=config)
    log.info(
        "Slack agent channel %s enabled (%s)",
        config.channel,
        f"{len(config.users)} agents" if config.users else "anyone in the channel is an agent",
    )
    return SlackAgentActions(
        desk=desk, surface=surface, names=SlackAgentNames(client=client), config=config
    )


class SlackAgentSurface:
    """The desk's `AgentSurface` in Slack: keeps each handoff's card current and its thread
    told. Moves on one handoff are shown one at a time, in the order the desk made them.
    Also a `BookingSurface`: a card per booking, updated when it moves or is cancelled."""

    surface_name: Final = REF

    def __init__(
        self, *, client: AsyncWebClient, handoffs: HandoffRefs, config: AgentChannelConfig
    ) -> None:
        self._client = client
        self._handoffs = handoffs
        self.config = config
        self._locks: dict[int, asyncio.Lock] = {}

    # ------------------------------------------------------------ AgentSurface

    async def notify_new(self, handoff: Handoff) -> None:
        async with self._one_at_a_time(handoff.id):
            await self._show(handoff.id)

    async def user_message(self, handoff: Handoff, text: str) -> None:
        async with self._one_at_a_time(handoff.id):
            card_ref = await self._show(handoff.id, update=False)
            await self._post(card_ref, user_said(handoff, text))

    async def agent_message(
        self, handoff: Handoff, message: StoredMessage, agent: AgentRef
    ) -> None:
        if agent.via == VIA:
            return  # written in the thread: it is there already
        async with self._one_at_a_time(handoff.id):
            card_ref = await self._show(handoff.id, update=False)
            await self._post(card_ref, agent_said(message, agent))

    async def claimed(self, handoff: Handoff, agent: AgentRef) -> None:
        await self._moved(handoff, "claimed", claimed_note(handoff))

    async def released(self, handoff: Handoff) -> None:
        await self._moved(handoff, "released", released_note(handoff))

    async def cancelled(self, handoff: Handoff) -> None:
        await self._moved(handoff, "cancelled", cancelled_note(handoff))

    # ------------------------------------------------------------ BookingSurface

    async def booking_changed(self, booking: Booking, *, when: str) -> dict[str, Any] | None:
        link = f"{self.config.public_url}/console/bookings" if self.config.public_url else None
        message = booking_card(booking, when=when, link=link)
        known = booking.refs.get(REF)
        if isinstance(known, dict) and known.get("channel") == self.config.channel:
            try:
                await call(
                    "chat.update",
                    self._client.chat_update(
                        channel=known["channel"], ts=known["ts"], **message.as_args()
                    ),
                )
                return None
            except SlackApiFailure as failure:
                if failure.code != "message_not_found":
                    raise
                log.warning("the card of booking %d was deleted; posting it again", booking.id)
        posted = await call(
            "chat.postMessage",
            self._client.chat_postMessage(channel=self.config.channel, **message.as_args()),
        )
        return {"channel": self.config.channel, "ts": str(posted["ts"])}

    # ------------------------------------------------------------ for the actions

    async def refresh(self, handoff_id: int) -> None:
        """Show the handoff as it is now (e.g. after a click on a card gone stale)."""
        async with self._one_at_a_time(handoff_id):
            await self._show(handoff_id)

    async def tell(
        self, *, user: str, channel: str, text: str, thread_ts: str | None = None
    ) -> None:
        """Say `text` to `user` alone (an ephemeral message); a failure is only logged."""
        try:
            await call(
                "chat.postEphemeral",
                self._client.chat_postEphemeral(
                    channel=channel, user=user, text=text, thread_ts=thread_ts
                ),
            )
        except SlackApiFailure as failure:
            log.warning("could not tell a Slack agent why their action did nothing: %s", failure)

    # ------------------------------------------------------------ private

    async def _moved(self, handoff: Handoff, move: str, note: SlackMessage) -> None:
        """Update the card, and note the move in the thread once (the desk may repeat a call)."""
        async with self._one_at_a_time(handoff.id):
            card_ref = await self._show(handoff.id)
            if move in card_ref.noted:
                return
            await self._post(card_ref, note)
            await self._handoffs.set_ref(
                handoff.id, surface=REF, ref=card_ref.ts, data=card_ref.data(noted=move)
            )

    async def _show(self, handoff_id: int, *, update: bool = True) -> _CardRef:
        """The handoff's card, posted if there is none yet (in this channel), else re-rendered
        from the store when `update`."""
        current = await self._handoffs.get(handoff_id)
        message = card(current, link=self.config.link(current.id))
        known = _CardRef.of(current)
        if known is not None and known.channel == self.config.channel:
            if not update:
                return known
            try:
                await call(
                    "chat.update",
                    self._client.chat_update(
                        channel=known.channel, ts=known.ts, **message.as_args()
                    ),
                )
                return known
            except SlackApiFailure as failure:
                if failure.code != "message_not_found":
                    raise
                log.warning("the card of handoff %d was deleted; posting it again", handoff_id)
        posted = await call(
            "chat.postMessage",
            self._client.chat_postMessage(channel=self.config.channel, **message.as_args()),
        )
        made = _CardRef(channel=self.config.channel, ts=str(posted["ts"]), noted=())
        await self._handoffs.set_ref(current.id, surface=REF, ref=made.ts, data=made.data())
        log.info("handoff %d shown in the Slack agent channel", current.id)
        intro = recent(current)
        if intro is not None:
            await self._post(made, intro)
        return made

    async def _post(self, card_ref: _CardRef, message: SlackMessage) -> None:
        await call(
            "chat.postMessage",
            self._client.chat_postMessage(
                channel=card_ref.channel, thread_ts=card_ref.ts, **message.as_args()
            ),
        )

    @asynccontextmanager
    async def _one_at_a_time(self, handoff_id: int) -> AsyncIterator[None]:
        # asyncio.Lock is fair: the desk's background calls, started in the order of the moves,
        # get the lock in that order, so the thread reads in the order things happened.
        lock = self._locks.setdefault(handoff_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and len(self._locks) > 1000:
                self._locks.pop(handoff_id, None)


class SlackAgentActions:
    """What agents do in Slack, from the recorded request to the desk's move. Anything refused
    is said to the agent alone (ephemeral) and changes nothing."""

    def __init__(
        self,
        *,
        desk: AgentDesk,
        surface: SlackAgentSurface,
        names: SlackAgentNames,
        config: AgentChannelConfig,
    ) -> None:
        self.desk = desk
        self.surface = surface
        self.names = names
        self.config = config

    async def recognise(
        self, body: Mapping[str, Any], *, bot_user_id: str | None
    ) -> AgentRequest | None:
        """The agent request in a verified Slack request, or None to leave it to the user
        channel. A message counts only in a card's thread (asks the store)."""
        request = parse_agent(body, agent_channel=self.config.channel, bot_user_id=bot_user_id)
        if request is None or not isinstance(request.act, AgentPost):
            return request
        handoff = await self.desk.handoffs.by_ref(surface=REF, ref=request.act.thread_ts)
        known = _CardRef.of(handoff) if handoff is not None else None
        if handoff is None or known is None or known.channel != request.act.channel:
            return None  # the agents' own threads
        act = request.act.model_copy(update={"handoff_id": handoff.id})
        return request.model_copy(update={"act": act})

    @staticmethod
    def owns(event: InboxEvent) -> bool:
        """Whether a recorded Slack event is an agent request (else it is a user's turn)."""
        return event.payload.get("surface") == SURFACE

    async def __call__(self, event: InboxEvent) -> None:
        """The worker's handler for a recorded agent request."""
        request = AgentRequest.model_validate(event.payload)
        if isinstance(request.act, AgentClick):
            await self._click(request.user, request.act)
        else:
            await self._post(request.user, request.act)

    # ------------------------------------------------------------ private

    async def _click(self, user: str, click: AgentClick) -> None:
        async def tell(text: str) -> None:
            await self.surface.tell(user=user, channel=click.channel, text=text)

        if click.channel != self.config.channel:
            await tell(ELSEWHERE)
            return
        if not self.config.allows(user):
            log.warning("Slack user %s is not among SLACK_AGENT_USERS: click refused", user)
            await tell(REFUSED)
            return
        agent = await self.names.ref(user)
        try:
            if click.action == "claim":
                await self.desk.claim(click.handoff_id, agent)
            else:
                await self.desk.release(click.handoff_id, agent, outcome=click.outcome)
        except AlreadyClaimed as taken:
            await tell(f"{mention(taken.agent, taken.agent_name)}さんが対応中です。")
        except NotHolder:
            current = await self.desk.handoffs.get(click.handoff_id)
            await tell(f"ボットに戻せるのは対応中の担当者（{holder(current)}さん）だけです。")
        except HandoffClosed:
            await tell("この相談はもう終わっています（ボットに戻っています）。")
            await self.surface.refresh(click.handoff_id)
        except UnknownHandoff:
            await tell("この相談は見つかりませんでした。")

    async def _post(self, user: str, post: AgentPost) -> None:
        async def tell(text: str) -> None:
            await self.surface.tell(
                user=user, channel=post.channel, text=text, thread_ts=post.thread_ts
            )

        if post.handoff_id is None:  # `recognise` records only card threads, with their id
            return
        if not self.config.allows(user):
            log.warning("Slack user %s is not among SLACK_AGENT_USERS: message refused", user)
            await tell(f"{REFUSED}{NOT_SENT}")
            return
        note = post.text.startswith(NOTE_MARK)
        text = post.text.removeprefix(NOTE_MARK).strip() if note else post.text
        if not text:
            return
        if len(text) > MAX_TEXT:
            await tell(
                f"{MAX_TEXT}文字までです（{len(text)}文字）。分けて送ってください。{NOT_SENT}"
            )
            return
        agent = await self.names.ref(user)
        if note:
            await self.desk.note(post.handoff_id, agent, text)
            return
        if text.startswith(CANNED_MARKS) and len(text.split()) == 1:
            try:
                text = await self.desk.canned_text(post.handoff_id, agent, text[1:].strip())
            except CannedReplyError as error:
                await tell(f"{error}{NOT_SENT}")
                return
        try:
            await self.desk.reply(post.handoff_id, agent, text)
        except NotHolder:
            current = await self.desk.handoffs.get(post.handoff_id)
            if current.status is HandoffStatus.WAITING:
                await tell(
                    f"まだ誰も対応していません。カードの［対応する］を押してから返信してください。{NOT_SENT}"
                )
            else:
                await tell(
                    f"この相談は{holder(current)}さんが対応中です。{NOT_SENT}"
                    f"メモを残すときは `{NOTE_MARK}` で始めてください。"
                )
        except HandoffClosed:
            await tell(f"この相談はもう終わっています（ボットに戻っています）。{NOT_SENT}")
        except DeliveryFailed as failure:
            log.warning(
                "an agent's reply for handoff %d was kept, not delivered: %s",
                post.handoff_id,
                failure,
            )
            await tell(
                "返信は記録しましたが、ユーザーのチャンネルが受け取りませんでした。少しして送り直してください。"
            )


class SlackAgentNames:
    """A Slack user as an agent: `AgentRef(id="slack:U…", name=<display name>, via="slack")`.
    Names come from users.info and are remembered for `NAME_TTL` seconds."""

    def __init__(
        self, *, client: AsyncWebClient, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._clock = clock
        self._names: dict[str, tuple[str, float]] = {}

    async def ref(self, user: str) -> AgentRef:
        return AgentRef(id=f"{SLACK_AGENT_PREFIX}{user}", name=await self.name(user), via=VIA)

    async def name(self, user: str) -> str:
        now = self._clock()
        known = self._names.get(user)
        if known is not None and known[1] > now:
            return known[0]
        try:
            data = await call("users.info", self._client.users_info(user=user))
        except SlackApiFailure as failure:
            # A stale name beats none; no name at all is said as 担当者, and asked again next time.
            log.warning("users.info for an agent failed: %s", failure)
            return known[0] if known is not None else FALLBACK_NAME
        name = _display_name(data.get("user") or {}) or FALLBACK_NAME
        self._names[user] = (name, now + NAME_TTL)
        return name


# ---------------------------------------------------------------- private


@dataclass(frozen=True, slots=True, kw_only=True)
class _CardRef:
    """Where a handoff's card is, and which moves its thread has been told of."""

    channel: str
    ts: str
    noted: tuple[str, ...]

    @classmethod
    def of(cls, handoff: Handoff) -> _CardRef | None:
        ref = handoff.ref(REF)
        if ref is None:
            return None
        noted = ref.data.get("noted") or []
        return cls(
            channel=str(ref.data.get("channel", "")),
            ts=ref.ref,
            noted=tuple(str(n) for n in noted),
        )

    def data(self, *, noted: str | None = None) -> dict[str, Any]:
        moves = [*self.noted, noted] if noted else list(self.noted)
        return {"channel": self.channel, "noted": moves}


def _display_name(user: Mapping[str, Any]) -> str:
    profile = user.get("profile") or {}
    for name in (
        profile.get("display_name"),
        profile.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(name, str) and name.strip():
            return name.strip()
    return ""
