"""Slack: the conversation in DMs and channel threads, through slack-bolt and slack-sdk.

`POST /slack/events` takes events and interactivity. Bolt verifies the signature, answers
`url_verification` and drops the bot's own events; then `_Recorder` parses the request into
our own `SlackInbound`, records it in the inbox (unique by its event id, so Slack's retries and
duplicates come to one turn) and only then acknowledges. The inbox runs the turn
(`SlackTurns`) and the outbox delivers it through `SlackCourier` with the Web API.

The conversation does not use Bolt listeners: for Events API requests Bolt acknowledges before
a listener runs and runs it in a future nobody keeps, so an event could be acknowledged and then
lost. A middleware runs before the acknowledgement and decides its status. Requests it does not
take go on to Bolt's listeners (`SlackAdapter.bolt`, for other features' own buttons), and
what no listener takes either is acknowledged with 200 (`_unhandled`) so Slack does not retry.

With `SLACK_AGENT_CHANNEL` set, agents' clicks and thread replies there take the same path:
the middleware asks the agent channel (`agents/actions.py`) first, records what it recognises, and
the worker hands those records back to it (`_routed`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final

import aiohttp
from pydantic import SecretStr
from slack_bolt.async_app import AsyncApp
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.channels.slack.agents import actions as slack_agents
from bot.channels.slack.agents.actions import SlackAgentActions
from bot.channels.slack.blocks import SlackMessage, render, render_answer
from bot.channels.slack.events import Clicked, SlackInbound, destination, parse
from bot.channels.slack.web_api import SlackApiFailure
from bot.channels.slack.web_api import call as _call
from bot.config import Settings
from bot.core.ports import (
    AgentDesk,
    AgentSurface,
    Attempt,
    Conversations,
    Deliveries,
    EventHandler,
    Handled,
    InboxEvent,
    OutboxItem,
    Recorder,
    Turns,
)
from bot.errors import ChannelError, StoreError
from bot.models import Channel, ChoiceIn, ChoicesOut, ConversationKey, Message
from bot.storable_text import scrub_json

log = logging.getLogger(__name__)

PATH: Final = "/slack/events"
CHANNEL: Final = Channel.SLACK.value
DOUBLE_CLICK_SECONDS: Final = 1.5
"""Two clicks of one button closer than this are one click (the second is not answered)."""
CLICKS_REMEMBERED: Final = 10_000
RATE_LIMIT_RETRIES: Final = 3
"""429s waited out (each for its Retry-After) before a call counts as failed."""


def enabled(settings: Settings) -> bool:
    """Both Slack secrets set: without them Slack stays off and its route answers 404."""
    return not _missing_secrets(settings)


@dataclass(frozen=True, kw_only=True)
class SlackChannel:
    """Slack's set-up; `build` makes the adapter when both Slack secrets are set."""

    channel: ClassVar[Channel] = Channel.SLACK

    async def build(
        self,
        settings: Settings,
        *,
        turns: Turns,
        recorder: Recorder,
        deliveries: Deliveries,
        conversations: Conversations,
        desk: AgentDesk,
    ) -> SlackAdapter | None:
        missing = _missing_secrets(settings)
        if missing:
            log.info(
                "Slack channel disabled: %s not set; POST %s answers 404",
                " and ".join(missing),
                PATH,
            )
            if settings.slack_agent_channel.strip():
                log.warning("SLACK_AGENT_CHANNEL is set, but the Slack agent channel needs Slack")
            return None
        token = _secret(settings.slack_bot_token)
        signing_secret = _secret(settings.slack_signing_secret)
        # One connection pool for every call, closed at shutdown (created here, in the loop).
        session = aiohttp.ClientSession()
        client = _web_client(token, settings.slack_api_base_url, session)
        agents = slack_agents.start(client=client, settings=settings, desk=desk)
        bolt = _bolt_app(
            client,
            signing_secret,
            _Recorder(recorder=recorder, conversations=conversations, agents=agents),
        )
        out = SlackOut(client=client)
        turns_handler = SlackTurns(
            turns=turns, conversations=conversations, out=out, deliveries=deliveries
        )
        log.info("Slack channel enabled at POST %s", PATH)
        return SlackAdapter(
            bolt=bolt,
            session=session,
            recorder=recorder,
            handle=turns_handler if agents is None else _routed(turns_handler, agents),
            courier=SlackCourier(out=out),
            sender=SlackSender(out=out),
            surfaces=() if agents is None else (agents.surface,),
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class SlackAdapter:
    """One process's Slack side: Bolt (for `POST /slack/events`), the handler of recorded
    events, the outbox courier, the sender and the agent channel's surface."""

    bolt: AsyncApp
    session: aiohttp.ClientSession
    recorder: Recorder
    handle: EventHandler
    courier: SlackCourier
    sender: SlackSender
    surfaces: tuple[AgentSurface, ...]

    async def close(self) -> None:
        await self.session.close()


class SlackOut:
    """Renders our messages and sends them; the one place that calls the Slack Web API."""

    def __init__(self, *, client: AsyncWebClient) -> None:
        self._client = client
        self._dm_channels: dict[str, str] = {}

    async def post(
        self, address: str, messages: Sequence[Message], *, speaker: str | None = None
    ) -> None:
        """Post to the conversation at `address` (a DM, a channel thread, or a user id)."""
        where = destination(address)
        channel = await self._channel(where.channel)
        for index, message in enumerate(messages):
            for part in render(message, speaker=speaker if index == 0 else None):
                await _call(
                    "chat.postMessage",
                    self._client.chat_postMessage(
                        channel=channel, thread_ts=where.thread_ts, **part.as_args()
                    ),
                )

    async def replace(self, clicked: Clicked, question: ChoicesOut) -> None:
        """Show the question again in place of the clicked one (a multi-select pick)."""
        await self._update(clicked, render(question)[0])

    async def close(self, clicked: Clicked) -> None:
        """Show the answer on the clicked message and take its buttons away."""
        await self._update(clicked, render_answer(clicked.question, clicked.label))

    async def _update(self, clicked: Clicked, message: SlackMessage) -> None:
        await _call(
            "chat.update",
            self._client.chat_update(channel=clicked.channel, ts=clicked.ts, **message.as_args()),
        )

    async def _channel(self, channel: str) -> str:
        """A user id (U…/W…) is reached through the DM channel `conversations.open` gives."""
        if not channel.startswith(("U", "W")):
            return channel
        if channel not in self._dm_channels:
            opened = await _call(
                "conversations.open", self._client.conversations_open(users=channel)
            )
            self._dm_channels[channel] = str(opened["channel"]["id"])
        return self._dm_channels[channel]


class SlackTurns:
    """The inbox's handler for recorded Slack events: run the turn, then deliver it."""

    def __init__(
        self,
        *,
        turns: Turns,
        conversations: Conversations,
        out: SlackOut,
        deliveries: Deliveries,
    ) -> None:
        self.turns = turns
        self.conversations = conversations
        self.out = out
        self.deliveries = deliveries
        # address -> (message ts, choice, when) of the last click run: a user's events run
        # in order in one worker (its lease), so a double click's second half meets it here.
        self._last_click: OrderedDict[str, tuple[str, str, datetime]] = OrderedDict()

    def _double_click(self, address: str, inbound: SlackInbound) -> bool:
        if inbound.clicked is None or not isinstance(inbound.event, ChoiceIn):
            return False
        this = (inbound.clicked.ts, inbound.event.choice, inbound.occurred_at)
        last = self._last_click.get(address)
        self._last_click[address] = this
        self._last_click.move_to_end(address)
        while len(self._last_click) > CLICKS_REMEMBERED:
            self._last_click.popitem(last=False)
        return (
            last is not None
            and last[:2] == this[:2]
            and abs((this[2] - last[2]).total_seconds()) < DOUBLE_CLICK_SECONDS
        )

    async def __call__(self, event: InboxEvent) -> Handled:
        inbound = SlackInbound.model_validate(event.payload)
        key = event.key
        if self._double_click(key.address, inbound):
            # The same button of the same message again within a moment: the first click is
            # being answered; a second answer ("that button was for the last question")
            # would only confuse. Kept in the inbox, not in the conversation.
            log.info("Slack double click ignored (%s)", event.event_id)
            return Handled.NOTHING_SAVED
        # Only a click that answers the current question changes its message; a stale click
        # (a double click, an old message) leaves the history alone and the engine says so.
        clicked = inbound.clicked if await self._answers_current(key, inbound) else None
        reply = await self.turns.handle(key, inbound.event, outbox=True, inbox_id=event.id)
        messages = list(reply.messages)
        if clicked is not None:
            messages = await self._settle(clicked, inbound, messages)
        await self.deliveries.deliver_now(reply, key, messages)
        return Handled.WITH_TURN

    async def _answers_current(self, key: ConversationKey, inbound: SlackInbound) -> bool:
        if inbound.clicked is None or not isinstance(inbound.event, ChoiceIn):
            return False
        return await self.conversations.question_state(key) == inbound.event.state

    async def _settle(
        self, clicked: Clicked, inbound: SlackInbound, messages: list[Message]
    ) -> list[Message]:
        """Update the clicked message; returns the messages still to post."""
        first = messages[0] if messages else None
        state = inbound.event.state if isinstance(inbound.event, ChoiceIn) else None
        try:
            # A multi-select pick asks the same question again with the pick marked: it takes
            # the clicked message's place, so one set of live buttons shows the choices so far.
            if isinstance(first, ChoicesOut) and first.multi and first.state == state:
                await self.out.replace(clicked, first)
                return messages[1:]
            await self.out.close(clicked)
        except SlackApiFailure as failure:
            # Cosmetic for a closed question; a multi-select that could not be replaced is
            # posted instead, so its buttons are not lost.
            log.warning("updating the clicked Slack message failed: %s", failure)
        return messages


class SlackCourier:
    """The outbox's `Courier` for Slack. Slack has no idempotency key for a post, so an item
    is posted once per round; a refusal (after the client's own retries) is for good."""

    def __init__(self, *, out: SlackOut) -> None:
        self._out = out

    async def deliver(
        self, item: OutboxItem, messages: Sequence[Message], attempt: Attempt
    ) -> None:
        try:
            await self._out.post(item.address, messages)
        except SlackApiFailure as failure:
            log.error("Slack reply %d to %s not delivered: %s", item.id, item.address, failure)
            raise


class SlackSender:
    """`Sender` for Slack: posts to a conversation's DM or thread (agents' replies).

    Slack has no idempotency key for `chat.postMessage`; delivered keys are remembered in this
    process, per message, so a retried `send` posts only what did not go out before.
    """

    _REMEMBERED: Final = 10_000

    def __init__(self, *, out: SlackOut) -> None:
        self._out = out
        self._delivered: OrderedDict[str, None] = OrderedDict()

    async def send(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None:
        if key.channel is not Channel.SLACK:
            raise ChannelError(f"the Slack sender cannot reach {key}")
        for index, message in enumerate(messages):
            part = f"{idempotency_key}#{index}"
            if part in self._delivered:
                continue
            await self._out.post(key.address, [message], speaker=sender_name)
            self._delivered[part] = None
            while len(self._delivered) > self._REMEMBERED:
                self._delivered.popitem(last=False)


# ---------------------------------------------------------------- private


class _Recorder(AsyncMiddleware):
    """Records a user's action durably, then acknowledges; anything else is acknowledged as is,
    so Slack never retries a request we chose to ignore."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        conversations: Conversations,
        agents: SlackAgentActions | None = None,
    ) -> None:
        self._recorder = recorder
        self._conversations = conversations
        self._agents = agents

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        authorized = req.context.authorize_result
        bot_user_id = authorized.bot_user_id if authorized else None
        body = scrub_json(req.body)  # no NUL or lone surrogate reaches the store
        if self._agents is not None:
            try:
                request = await self._agents.recognise(body, bot_user_id=bot_user_id)
            except StoreError as error:
                log.error("Slack agent request not recognised: %s", error)
                return BoltResponse(status=503, body="")
            if request is not None:
                return await self._record(
                    req,
                    event_id=request.event_id,
                    address=request.address,
                    payload=request.model_dump(mode="json"),
                    occurred_at=request.occurred_at,
                )
        inbound = parse(body, bot_user_id=bot_user_id)
        if inbound is None or (
            # a reply in a thread the bot is not talking in
            inbound.origin == "thread" and not await self._continues(inbound.address)
        ):
            await next()
            return None
        return await self._record(
            req,
            event_id=inbound.event_id,
            address=inbound.address,
            payload=inbound.model_dump(mode="json"),
            occurred_at=inbound.occurred_at,
        )

    async def _record(
        self,
        req: AsyncBoltRequest,
        *,
        event_id: str,
        address: str,
        payload: dict[str, Any],
        occurred_at: datetime,
    ) -> BoltResponse:
        try:
            new = await self._recorder.submit(
                channel=CHANNEL,
                event_id=event_id,
                address=address,
                payload=payload,
                occurred_at=occurred_at,
            )
        except StoreError as error:
            # Not recorded, so not acknowledged: Slack retries, and the retry may get through.
            log.error("Slack event %s not recorded: %s", event_id, error)
            return BoltResponse(status=503, body="")
        retry = req.headers.get("x-slack-retry-num")
        if retry:
            outcome = "recorded now" if new else "already recorded"
            log.info("Slack retry %s of %s: %s", retry[0], event_id, outcome)
        return _ack()

    async def _continues(self, address: str) -> bool:
        """Does the bot talk in this thread? Its conversation exists, or its first event (the
        mention) is recorded and waiting."""
        return await self._conversations.is_known(
            ConversationKey(channel=Channel.SLACK, address=address)
        )


def _routed(turns: SlackTurns, agents: SlackAgentActions) -> EventHandler:
    """The worker's Slack handler: agent requests to the agent channel, the rest are turns."""

    async def handle(event: InboxEvent) -> Handled:
        if agents.owns(event):
            await agents(event)
            return Handled.NOTHING_SAVED
        return await turns(event)

    return handle


def _web_client(token: str, base_url: str, session: aiohttp.ClientSession) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(),
        ],
    )


def _bolt_app(client: AsyncWebClient, signing_secret: str, recorder: _Recorder) -> AsyncApp:
    bolt = AsyncApp(
        name="yarigai",
        client=client,  # carries the token; passing `token` as well only earns a warning
        signing_secret=signing_secret,
        request_verification_enabled=True,
        # Unmatched requests go to `_unhandled` (200) instead of Bolt's 404, which Slack
        # would retry.
        raise_error_for_unhandled_request=True,
        logger=log,
    )
    bolt.use(recorder)
    bolt.error(_unhandled)
    return bolt


def _ack() -> BoltResponse:
    return BoltResponse(status=200, body="")


async def _unhandled(error: Exception) -> BoltResponse | None:
    """Bolt's error handler (it passes arguments by name: `error`)."""
    if isinstance(error, BoltUnhandledRequestError):
        # Other event types and subtypes, edits, deletions, bots, channel chatter, other apps'
        # buttons: nothing to do, and acknowledged so that Slack does not retry.
        return _ack()
    log.error("Slack request failed: %s", type(error).__name__, exc_info=error)
    return None  # Bolt's 500: Slack retries, and a recorded event is deduplicated then


def _missing_secrets(settings: Settings) -> list[str]:
    secrets = {
        "SLACK_SIGNING_SECRET": settings.slack_signing_secret,
        "SLACK_BOT_TOKEN": settings.slack_bot_token,
    }
    return [name for name, value in secrets.items() if not _secret(value)]


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""
