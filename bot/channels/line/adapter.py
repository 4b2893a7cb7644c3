"""LINE behind the core's ports: the webhook's check and record, the handler of recorded
events, the outbox courier and the sender.

    POST /webhooks/line -> (bot.http) body cap -> LineAdapter.acknowledge: signature, parse,
                           record each event -> 200
    inbox               -> LineAdapter.handle -> turns.handle(outbox=True, inbox_id=...)
                        -> deliveries.deliver_now -> LineCourier: reply token, else push

The webhook answers as soon as each event is recorded; nothing on that path waits for LINE.
A turn's reply is written to the outbox in the same transaction as the turn (which also marks
the event processed); `bot.core.outbox` delivers it, in order, and repairs what a crash left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from bot.channels.line.api import REQUEST_TIMEOUT, LineApi, LineApiError
from bot.channels.line.delivery import REPLY_TOKEN_LIFE, RETRY_DELAYS, Delivery
from bot.channels.line.render import render
from bot.channels.line.webhook import (
    Ignored,
    LineEvent,
    MalformedWebhook,
    event_from_json,
    parse,
    verify,
)
from bot.config import Settings
from bot.core.ports import (
    Attempt,
    Deliveries,
    Handled,
    InboxEvent,
    OutboxItem,
    Recorder,
    Turns,
)
from bot.models import Channel, ConversationKey, JoinedGroupIn, LeftIn, Message

log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/webhooks/line"
LOADING_AFTER: Final = 1.0
"""Seconds a turn may take before the user is shown the loading animation."""
LOADING_SECONDS: Final = 10
"""How long LINE shows it at most (5-60, a multiple of 5); our message ends it earlier."""
LOADING_PER_SECOND: Final = 20
"""At most this many loading animations a second. When every turn is slow the bot is
overloaded, and an API call per user would only slow it further."""
TURNS_AT_ONCE: Final = 64
"""Turns computed at once (delivery not included): enough to fill a batch, which the service
saves in one transaction, and few enough that a batch's thinking never holds the event loop
(and the webhook's fast 200) for long."""


async def _ask_bot_user_id(api: LineApi) -> str | None:
    """The bot user id from LINE (LINE_BOT_USER_ID unset), or None if LINE does not say."""
    try:
        return await api.bot_user_id()
    except LineApiError as error:
        log.warning(
            "LINE_BOT_USER_ID is not set and LINE did not tell it (%s): webhooks are accepted "
            "whatever their destination",
            error,
        )
        return None


def enabled(settings: Settings) -> bool:
    """Both secrets set: without them LINE stays off and its webhook answers 404."""
    return _secrets(settings) is not None


@dataclass(frozen=True, kw_only=True)
class LineChannel:
    """LINE's tuning; `build` makes the adapter for one process."""

    loading_after: float | None = LOADING_AFTER
    retry_delays: Sequence[float] = RETRY_DELAYS
    reply_token_life: float = REPLY_TOKEN_LIFE
    request_timeout: float = REQUEST_TIMEOUT
    turns_at_once: int = TURNS_AT_ONCE

    channel: ClassVar[Channel] = Channel.LINE

    async def build(
        self,
        settings: Settings,
        *,
        turns: Turns,
        recorder: Recorder,
        deliveries: Deliveries,
    ) -> LineAdapter | None:
        """The adapter, or None when LINE is not configured."""
        secrets = _secrets(settings)
        if secrets is None:
            log.info(
                "LINE is off: set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN "
                "to enable POST %s",
                WEBHOOK_PATH,
            )
            return None
        secret, access_token = secrets
        api = await LineApi.open(
            base_url=settings.line_api_base_url,
            access_token=access_token,
            request_timeout=self.request_timeout,
        )
        delivery = Delivery(
            api=api, retry_delays=tuple(self.retry_delays), reply_token_life=self.reply_token_life
        )
        return LineAdapter(
            api=api,
            bot_user_id=settings.line_bot_user_id.strip() or await _ask_bot_user_id(api),
            delivery=delivery,
            secret=secret,
            max_body=settings.line_max_body_bytes,
            tuning=self,
            turns=turns,
            recorder=recorder,
            deliveries=deliveries,
        )


@dataclass(eq=False, kw_only=True)
class LineAdapter:
    """One process's LINE side."""

    api: LineApi
    delivery: Delivery
    bot_user_id: str | None  # webhooks for another `destination` are ignored
    secret: str = field(repr=False)
    max_body: int
    tuning: LineChannel
    turns: Turns
    recorder: Recorder
    deliveries: Deliveries
    _loading_window: tuple[float, int] = (0.0, 0)  # (second started, animations shown in it)
    _thinking: asyncio.Semaphore = field(init=False)
    courier: LineCourier = field(init=False)
    sender: LineSender = field(init=False)

    def __post_init__(self) -> None:
        self._thinking = asyncio.Semaphore(self.tuning.turns_at_once)
        self.courier = LineCourier(delivery=self.delivery)
        self.sender = LineSender(delivery=self.delivery)

    async def close(self) -> None:
        await self.api.close()

    # ------------------------------------------------------------ webhook

    async def acknowledge(
        self, body: bytes | None, signature: str | None, client: str
    ) -> tuple[int, str | None]:
        """Check and record a webhook body: (status, error to answer with, if any)."""
        if body is None:
            return 413, "body too large"
        if not verify(self.secret, body, signature):
            # Never the body: an unsigned request may be anyone's, with anything in it.
            log.warning(
                "LINE webhook refused: %s signature from %s", "bad" if signature else "no", client
            )
            return 401, "invalid signature"
        try:
            events = parse(body, destination=self.bot_user_id)
        except MalformedWebhook as exc:
            log.warning("LINE webhook refused: %s", exc)
            return 400, str(exc)
        submits = [
            self.recorder.submit(
                channel=Channel.LINE.value,
                event_id=event.id,
                address=event.chat_id,
                payload=event.model_dump(mode="json"),
                occurred_at=event.occurred_at,
            )
            for event in events
        ]
        # Counted as foreground work only once signed: slow or forged requests must not hold
        # the bot's turns back (bot/core/backpressure.py).
        with self.recorder.serving():
            if len(submits) == 1:
                await submits[0]
            elif submits:
                # Together, so one body's events share a transaction (the inbox orders them).
                await asyncio.gather(*submits)
        return 200, None

    # ------------------------------------------------------------ recorded events

    async def handle(self, inbox: InboxEvent) -> Handled:
        """Act on one recorded event (the inbox runs a user's events one at a time)."""
        event = event_from_json(inbox.payload)
        if event is None:
            log.warning("LINE inbox event %s is not one of ours; ignored", inbox.id)
            return Handled.NOTHING_SAVED
        content = event.content
        if event.standby or isinstance(content, Ignored):
            # Standby: another channel answers this chat. Ignored: kept, nothing to do.
            return Handled.NOTHING_SAVED
        key = ConversationKey(channel=Channel.LINE, address=event.chat_id)
        if isinstance(content, JoinedGroupIn):
            # Claimed by the service first: the note goes out at most once.
            note = await self.turns.handle(key, content, inbox_id=inbox.id)
            await self._send_now(event, note.messages, inbox.id)
            return Handled.WITH_TURN
        if not event.in_chat_with_user:
            return Handled.NOTHING_SAVED
        if isinstance(content, LeftIn):
            await self.turns.handle(key, content, inbox_id=inbox.id)
            return Handled.WITH_TURN
        loading: asyncio.TimerHandle | None = None
        try:
            async with self._thinking:
                # The animation's timer starts when the turn starts computing, not when the
                # event arrived: it is for a turn that itself takes long. Under a backlog every
                # queued event has already waited over LOADING_AFTER, and timing from arrival
                # would fire an API call per event, slowing the backlog further.
                loading = self._loading_later(event)
                reply = await self.turns.handle(
                    key,
                    content,
                    outbox=True,
                    inbox_id=inbox.id,
                    reply_token=event.reply_token,
                    event_at=event.occurred_at,
                )
            # From here on the turn (and the event's mark) is committed.
            await self.deliveries.deliver_now(
                reply, key, reply_token=event.reply_token, event_at=event.occurred_at
            )
        finally:
            if loading is not None:
                loading.cancel()
        return Handled.WITH_TURN

    async def _send_now(self, event: LineEvent, messages: Sequence[Message], inbox_id: int) -> None:
        """A reply outside any conversation (no outbox row); a failure is raised so the inbox
        records it on the event."""
        await self.delivery.deliver(
            event.chat_id,
            render(messages),
            message_key=f"line-inbox:{inbox_id}:{event.id}",
            reply_token=event.reply_token,
            occurred_at=event.occurred_at,
        )

    def _loading_later(self, event: LineEvent) -> asyncio.TimerHandle | None:
        """A timer (cheaper than a task per turn: most turns end long before it fires)."""
        after = self.tuning.loading_after
        if after is None or not event.in_chat_with_user:
            return None
        return asyncio.get_running_loop().call_later(after, self._start_loading, event.chat_id)

    def _start_loading(self, chat_id: str) -> None:
        self.recorder.spawn(self._show_loading(chat_id))

    async def _show_loading(self, chat_id: str) -> None:
        started, shown = self._loading_window
        now = time.monotonic()
        if now - started >= 1.0:
            started, shown = now, 0
        if shown >= LOADING_PER_SECOND:
            return
        self._loading_window = (started, shown + 1)
        try:
            await self.api.show_loading(chat_id, seconds=LOADING_SECONDS)
        except Exception as exc:  # a nicety: never let it disturb the turn
            log.info("loading animation not shown: %s", exc)


@dataclass(frozen=True, eq=False)
class LineCourier:
    """The outbox's `Courier` for LINE: by reply token while it is fresh and unspent, else
    by push under retry keys derived from the item (a repeated push is never shown twice)."""

    delivery: Delivery

    async def deliver(
        self, item: OutboxItem, messages: Sequence[Message], attempt: Attempt
    ) -> None:
        # Only a token that is unused (nobody tried the item) or may have been spent by an
        # earlier try is worth sending: LINE refusing the latter means that try delivered. The
        # token of an item tried and refused is worth nothing.
        use_token = attempt.first or attempt.maybe_delivered
        await self.delivery.deliver(
            item.address,
            render(messages),
            # Stable across retries, rounds and restarts: the retry keys come from it.
            message_key=f"line-outbox:{item.id}:{item.conversation_id}:{item.address}",
            reply_token=item.reply_token if use_token else None,
            occurred_at=item.event_at,
            token_maybe_spent=attempt.maybe_delivered,
            retry=attempt.retry,
        )


@dataclass(frozen=True, eq=False)
class LineSender:
    """The `Sender` for LINE: pushes outside a turn's reply (e.g. an agent's)."""

    delivery: Delivery

    async def send(
        self,
        key: ConversationKey,
        messages: Sequence[Message],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None:
        """Raises LineDeliveryFailed (a `bot.errors.DeliveryFailed`) when LINE does not take
        the messages; its text names LINE's reason, never the messages."""
        await self.delivery.push(
            key.address,
            render(messages, sender_name=sender_name),
            message_key=f"line-send:{idempotency_key}",
        )


def _secrets(settings: Settings) -> tuple[str, str] | None:
    """(channel secret, access token), or None unless both are set."""
    secret, token = settings.line_channel_secret, settings.line_channel_access_token
    if secret is None or token is None:
        return None
    values = secret.get_secret_value().strip(), token.get_secret_value().strip()
    return values if all(values) else None
