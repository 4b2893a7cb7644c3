"""Slack: the conversation in DMs and channel threads, through slack-bolt and slack-sdk.

`POST /slack/events` takes events and interactivity. Bolt verifies the signature, answers
`url_verification` and drops the bot's own events; then `_Recorder` parses the request into
our own `SlackInbound`, records it in the inbox (unique by its event id, so Slack's retries and
duplicates come to one turn) and only then acknowledges. The worker runs the turn
(`SlackTurns`) and `SlackOut` delivers it with the Web API.

The conversation does not use Bolt listeners: for Events API requests Bolt acknowledges before
a listener runs and runs it in a future nobody keeps, so an event could be acknowledged and then
lost. A middleware runs before the acknowledgement and decides its status. Requests it does not
take go on to Bolt's listeners (`app.state.slack_bolt`, for other features' own buttons), and
what no listener takes either is acknowledged with 200 (`_unhandled`) so Slack does not retry.

With `SLACK_AGENT_CHANNEL` set, agents' clicks and thread replies there take the same path:
the middleware asks the agent channel (`slack_agents`) first, records what it recognises, and
the worker hands those records back to it (`_routed`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import SecretStr, TypeAdapter
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
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
from bot.core.inbox import MARKED, EventHandler, Worker
from bot.core.ports import Sender
from bot.core.service import ConversationService
from bot.errors import ChannelError, StoreError
from bot.models import (
    CardOut,
    Channel,
    ChoiceIn,
    ChoicesOut,
    ConversationKey,
    Outbound,
    TextOut,
)
from bot.records import InboxEvent, OutboxItem
from bot.storable_text import scrub_json
from bot.store import SqlStore
from bot.wiring import Runtime

log = logging.getLogger(__name__)

PATH: Final = "/slack/events"
CHANNEL: Final = Channel.SLACK.value
RATE_LIMIT_RETRIES: Final = 3
"""429s waited out (each for its Retry-After) before a call counts as failed."""

Message = TextOut | ChoicesOut | CardOut
_MESSAGES: Final = TypeAdapter(list[Outbound])


class SlackChannel:
    """The `ChannelPlugin` for Slack; enabled when both Slack secrets are set."""

    def mount(self, app: FastAPI, settings: Settings) -> None:
        missing = _missing_secrets(settings)
        if missing:
            log.info(
                "Slack channel disabled: %s not set; POST %s answers 404",
                " and ".join(missing),
                PATH,
            )
            if settings.slack_agent_channel.strip():
                log.warning("SLACK_AGENT_CHANNEL is set, but the Slack agent channel needs Slack")
            return
        app.add_api_route(PATH, _events, methods=["POST"], include_in_schema=False)

    async def setup(self, app: FastAPI, runtime: Runtime) -> None:
        settings = runtime.settings
        token, signing_secret = (
            _secret(settings.slack_bot_token),
            _secret(settings.slack_signing_secret),
        )
        if not (token and signing_secret):
            return
        client = _web_client(token, settings.slack_api_base_url, runtime)
        agents = slack_agents.start(client=client, runtime=runtime)
        bolt = _bolt_app(client, signing_secret, runtime, agents=agents)
        app.state.slack_bolt = bolt
        app.state.slack = AsyncSlackRequestHandler(bolt)

        out = SlackOut(client=client)
        turns = SlackTurns(service=runtime.service, store=runtime.store, out=out)
        runtime.worker.register(CHANNEL, turns if agents is None else _routed(turns, agents))
        sender: Sender = SlackSender(out=out)
        runtime.senders[Channel.SLACK] = sender
        # Turns saved before the last stop whose replies were not delivered yet. Read now, before
        # the worker resumes anything, so no reply produced from here on is delivered twice.
        # Only in a process that runs turns, and only of its own users: other workers
        # deliver theirs.
        undelivered = [
            item
            for item in (
                await runtime.store.outbox_pending(limit=1000) if runtime.worker.local else []
            )
            if item.channel is Channel.SLACK and runtime.worker.owns(item.channel, item.address)
        ]
        if undelivered:
            log.info("delivering %d Slack replies left from the last run", len(undelivered))
            runtime.worker.spawn(turns.redeliver(undelivered))
        log.info("Slack channel enabled at POST %s", PATH)


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
    """The worker's handler for recorded Slack events: run the turn, then deliver it."""

    def __init__(self, *, service: ConversationService, store: SqlStore, out: SlackOut) -> None:
        self.service = service
        self.store = store
        self.out = out

    async def __call__(self, event: InboxEvent) -> Literal["marked"]:
        inbound = SlackInbound.model_validate(event.payload)
        key = event.key
        # Only a click that answers the current question changes its message; a stale click
        # (a double click, an old message) leaves the history alone and the engine says so.
        clicked = inbound.clicked if await self._answers_current(key, inbound) else None
        reply = await self.service.handle(key, inbound.event, outbox=True, inbox_id=event.id)
        messages = list(reply.messages)
        if clicked is not None:
            messages = await self._settle(clicked, inbound, messages)
        if reply.outbox_id is not None:
            await self._deliver(reply.outbox_id, key.address, messages)
        return MARKED  # the turn's transaction marked the event processed

    async def redeliver(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            messages = _MESSAGES.validate_python(item.payload)
            await self._deliver(item.id, item.address, messages)

    async def _answers_current(self, key: ConversationKey, inbound: SlackInbound) -> bool:
        if inbound.clicked is None or not isinstance(inbound.event, ChoiceIn):
            return False
        stored = await self.store.load(key)
        return stored is not None and stored.state.state == inbound.event.state

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

    async def _deliver(self, outbox_id: int, address: str, messages: Sequence[Message]) -> None:
        try:
            await self.out.post(address, messages)
        except SlackApiFailure as failure:
            log.error("Slack reply %d to %s not delivered: %s", outbox_id, address, failure)
            await self.store.mark_failed(outbox_id, str(failure))
            return
        await self.store.mark_sent(outbox_id)


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
        self, *, worker: Worker, store: SqlStore, agents: SlackAgentActions | None = None
    ) -> None:
        self._worker = worker
        self._store = store
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
            new = await self._worker.submit(
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
        key = ConversationKey(channel=Channel.SLACK, address=address)
        if await self._store.load(key) is not None:
            return True
        return bool(await self._store.pending_events(limit=1, channel=CHANNEL, address=address))


def _routed(turns: SlackTurns, agents: SlackAgentActions) -> EventHandler:
    """The worker's Slack handler: agent requests to the agent channel, the rest are turns."""

    async def handle(event: InboxEvent) -> Literal["marked"] | None:
        if agents.owns(event):
            await agents(event)
            return None
        return await turns(event)

    return handle


async def _events(request: Request) -> Response:
    handler: AsyncSlackRequestHandler | None = getattr(request.app.state, "slack", None)
    if handler is None:  # the lifespan has not set the channel up (yet)
        return Response(status_code=503)
    runtime: Runtime = request.app.state.runtime
    with runtime.service.foreground.serving():
        return await handler.handle(request)


def _web_client(token: str, base_url: str, runtime: Runtime) -> AsyncWebClient:
    # One connection pool for every call, closed at shutdown (created here, inside the loop).
    session = aiohttp.ClientSession()
    runtime.teardown.append(session.close)
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


def _bolt_app(
    client: AsyncWebClient,
    signing_secret: str,
    runtime: Runtime,
    *,
    agents: SlackAgentActions | None = None,
) -> AsyncApp:
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
    bolt.use(_Recorder(worker=runtime.worker, store=runtime.store, agents=agents))
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
