"""LINE: the webhook, the worker handler that runs each recorded event, and the sender.

    POST /webhooks/line -> body cap -> signature -> parse into LineEvent -> worker.submit -> 200
    worker              -> LineBot.handle -> service.handle(outbox=True, inbox_id=...)
                        -> deliver (reply token, else push with a retry key) -> mark_sent

The webhook answers as soon as each event is recorded; nothing on that path waits for LINE.
A turn's reply is written to the outbox in the same transaction as the turn (which also marks
the event processed), so a crash between the two is repaired at start-up by pushing what is
still pending; the push's retry key makes a repeated push harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError
from starlette.types import Receive, Scope, Send

from bot.asgi import add_post, answer, header, read_body
from bot.batching import GroupCommit
from bot.channels.line_api import REQUEST_TIMEOUT, LineApi
from bot.channels.line_delivery import (
    REPLY_TOKEN_LIFE,
    RETRY_DELAYS,
    Delivery,
    LineDeliveryFailed,
)
from bot.channels.line_render import render
from bot.channels.line_webhook import (
    SIGNATURE_HEADER,
    GroupJoined,
    Ignored,
    LineEvent,
    MalformedWebhook,
    Media,
    Unfollowed,
    event_from_json,
    parse,
    verify,
)
from bot.config import Settings
from bot.errors import BotError
from bot.models import (
    CardOut,
    Channel,
    ChoicesOut,
    ConversationKey,
    Mode,
    Outbound,
    TextOut,
)
from bot.runtime import Runtime
from bot.service import TURNS_PER_BATCH
from bot.store.records import InboxEvent, OutboxItem
from bot.worker import MARKED

log = logging.getLogger(__name__)

WEBHOOK_PATH: Final = "/webhooks/line"
LOADING_AFTER: Final = 1.0
"""Seconds a turn may take before the user is shown the loading animation."""
LOADING_SECONDS: Final = 10
"""How long LINE shows it at most (5-60, a multiple of 5); our message ends it earlier."""
LOADING_PER_SECOND: Final = 20
"""At most this many loading animations a second. When every turn is slow the bot is
overloaded, and an API call per user would only slow it further."""
SWEEP_EVERY: Final = 30.0
"""Seconds between looks for outbox items whose delivery failed or was cut short."""
ORPHAN_AFTER: Final = 60.0
"""Age (seconds) after which a pending item is nobody's in-process delivery any more."""
MAX_DELIVERY_ROUNDS: Final = 10
"""Rounds of delivery (each with its own retries) before an outbox item is marked failed."""
TURNS_AT_ONCE: Final = TURNS_PER_BATCH
"""Turns computed at once (delivery not included): enough to fill a batch, which the service
saves in one transaction, and few enough that a batch's thinking never holds the event loop
(and the webhook's fast 200) for long."""
PURGE_EVERY: Final = 6 * 3600.0
"""Seconds between retention purges of conversations whose users left (RETENTION_DAYS)."""
PURGE_FIRST_AFTER: Final = 60.0
"""The first purge waits a minute, so start-up stays light but frequent restarts still purge."""

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

_MESSAGES: Final = TypeAdapter(list[Outbound])

Message = TextOut | ChoicesOut | CardOut


def enabled(settings: Settings) -> bool:
    """Both secrets set: without them LINE stays off and its webhook answers 404."""
    return _secrets(settings) is not None


class LineChannel:
    """The LINE plugin. Holds only tuning; each app's state lives in `app.state.line`."""

    def __init__(
        self,
        *,
        loading_after: float | None = LOADING_AFTER,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        reply_token_life: float = REPLY_TOKEN_LIFE,
        request_timeout: float = REQUEST_TIMEOUT,
        sweep_every: float = SWEEP_EVERY,
        orphan_after: float = ORPHAN_AFTER,
        purge_every: float = PURGE_EVERY,
        turns_at_once: int = TURNS_AT_ONCE,
    ) -> None:
        self.loading_after = loading_after
        self.retry_delays = tuple(retry_delays)
        self.reply_token_life = reply_token_life
        self.request_timeout = request_timeout
        self.sweep_every = sweep_every
        self.orphan_after = orphan_after
        self.purge_every = purge_every
        self.turns_at_once = turns_at_once

    def mount(self, app: FastAPI, settings: Settings) -> None:
        if not enabled(settings):
            log.info(
                "LINE is off: set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN "
                "to enable POST %s",
                WEBHOOK_PATH,
            )
            return
        # Plain ASGI: the body reaches the signature check as raw bytes, and the hottest path
        # of the bot skips FastAPI's stack (bot/asgi.py).
        add_post(app, WEBHOOK_PATH, _webhook)

    async def setup(self, app: FastAPI, runtime: Runtime) -> None:
        settings = runtime.settings
        secrets = _secrets(settings)
        if secrets is None:
            return
        secret, access_token = secrets
        api = await LineApi.open(
            base_url=settings.line_api_base_url,
            access_token=access_token,
            request_timeout=self.request_timeout,
        )
        delivery = Delivery(
            api=api, retry_delays=self.retry_delays, reply_token_life=self.reply_token_life
        )
        bot = LineBot(
            runtime=runtime,
            api=api,
            delivery=delivery,
            secret=secret,
            max_body=settings.line_max_body_bytes,
            plugin=self,
        )
        app.state.line = bot
        runtime.worker.register(Channel.LINE.value, bot.handle)
        runtime.senders[Channel.LINE] = LineSender(delivery=delivery)
        runtime.teardown.append(bot.close)
        if runtime.worker.local:  # this process runs turns (inline server, or a worker)
            await bot.start()


@dataclass(eq=False)
class LineBot:
    """One app's LINE side: answers webhooks, handles recorded events, repairs the outbox."""

    runtime: Runtime
    api: LineApi
    delivery: Delivery
    secret: str = field(repr=False)
    max_body: int
    plugin: LineChannel
    _in_flight: set[int] = field(default_factory=set)  # outbox ids being delivered right now
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _loading_window: tuple[float, int] = (0.0, 0)  # (second started, animations shown in it)
    _turns: asyncio.Semaphore = field(init=False)
    _sent: GroupCommit[int, None] = field(init=False)

    def __post_init__(self) -> None:
        self._turns = asyncio.Semaphore(self.plugin.turns_at_once)
        # Deliveries finishing together share one UPDATE; each still awaits its own commit.
        self._sent = GroupCommit(self.runtime.store.mark_sent_many)

    async def start(self) -> None:
        """Deliver what a previous run left pending, then keep sweeping (and purging, in the
        process that runs the background jobs)."""
        # Taken before the worker recovers unprocessed events, and only of this worker's users
        # (other workers deliver their own): so only items of the previous run are in it, and
        # nobody is delivering them any more, whatever their age.
        orphans = await self._pending_line_items()
        if orphans:
            log.info("pushing %d LINE messages left undelivered by the last run", len(orphans))
        self._tasks += [
            asyncio.create_task(self._deliver_items(orphans)),
            asyncio.create_task(self._every(self.plugin.sweep_every, self.sweep, "sweep")),
        ]
        if self.runtime.background:
            self._tasks.append(
                asyncio.create_task(
                    self._every(
                        self.plugin.purge_every,
                        self.purge,
                        "purge",
                        first=min(PURGE_FIRST_AFTER, self.plugin.purge_every),
                    )
                )
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.close()

    # ------------------------------------------------------------ webhook

    async def webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /webhooks/line, as plain ASGI (see `bot.asgi`)."""
        try:
            body = await read_body(receive, scope, self.max_body)
            client = scope["client"][0] if scope.get("client") else "?"
            status, error = await self.acknowledge(
                body, header(scope, SIGNATURE_HEADER.lower().encode()), client
            )
        except BotError as exc:
            log.error("LINE webhook failed: %s", exc)
            status, error = 500, type(exc).__name__
        except Exception:
            log.exception("LINE webhook failed")
            status, error = 500, "internal error"
        await answer(send, status, {"error": error} if error else None)

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
            events = parse(body)
        except MalformedWebhook as exc:
            log.warning("LINE webhook refused: %s", exc)
            return 400, str(exc)
        submits = [
            self.runtime.worker.submit(
                channel=Channel.LINE.value,
                event_id=event.id,
                address=event.chat_id,
                payload=event.model_dump(mode="json"),
                occurred_at=event.occurred_at,
            )
            for event in events
        ]
        # Counted as foreground work only once signed: slow or forged requests must not hold
        # the bot's turns back (bot/priority.py).
        with self.runtime.service.foreground.serving():
            if len(submits) == 1:
                await submits[0]
            elif submits:
                # Together, so one body's events share a transaction (the worker orders them).
                await asyncio.gather(*submits)
        return 200, None

    # ------------------------------------------------------------ recorded events

    async def handle(self, inbox: InboxEvent) -> Literal["marked"] | None:
        """Act on one recorded event (the worker runs a user's events one at a time).

        MARKED when the turn's own transaction marked the event processed; None leaves that
        to the worker (events that save no turn)."""
        event = event_from_json(inbox.payload)
        if event is None:
            log.warning("LINE inbox event %s is not one of ours; ignored", inbox.id)
            return None
        content = event.content
        if event.standby or isinstance(content, Ignored):
            # Standby: another channel answers this chat. Ignored: kept, nothing to do.
            return None
        if isinstance(content, GroupJoined):
            await self._send_now(event, [TextOut(text=GROUP_NOTE)], inbox.id)
            return None
        if not event.in_chat_with_user:
            return None
        key = ConversationKey(channel=Channel.LINE, address=event.chat_id)
        if isinstance(content, Unfollowed):
            await self.runtime.store.mark_inactive(key)
            return None
        if isinstance(content, Media):
            await self._kind_reply(event, key, content, inbox.id)
            return None
        loading: asyncio.TimerHandle | None = None
        try:
            async with self._turns:
                # The animation's timer starts when the turn starts computing, not when the
                # event arrived: it is for a turn that itself takes long. Under a backlog every
                # queued event has already waited over LOADING_AFTER, and timing from arrival
                # would fire an API call per event, slowing the backlog further.
                loading = self._loading_later(event)
                reply = await self.runtime.service.handle(
                    key, content, outbox=True, inbox_id=inbox.id
                )
            # From here on the turn (and the event's mark) is committed.
            if reply.outbox_id is not None and reply.messages:
                await self._deliver(
                    outbox_id=reply.outbox_id,
                    conversation_id=reply.conversation_id,
                    to=event.chat_id,
                    messages=reply.messages,
                    reply_token=event.reply_token,
                    occurred_at=event.occurred_at,
                )
        finally:
            if loading is not None:
                loading.cancel()
        return MARKED

    # ------------------------------------------------------------ outbox

    async def sweep(self) -> None:
        """Push pending items nobody is delivering (a failed round, a cut-short run)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.plugin.orphan_after)
        items = [i for i in await self._pending_line_items() if i.created_at <= cutoff]
        await self._deliver_items(items)

    async def purge(self) -> None:
        days = self.runtime.settings.retention_days
        purged = await self.runtime.store.purge_inactive(datetime.now(UTC) - timedelta(days=days))
        if purged:
            log.info("deleted %d conversations of users gone over %d days", purged, days)

    async def _pending_line_items(self) -> list[OutboxItem]:
        """Pending LINE items of this worker's users that it is not delivering right now."""
        pending = await self.runtime.store.outbox_pending(limit=1000)
        worker = self.runtime.worker
        return [
            item
            for item in pending
            if item.channel is Channel.LINE
            and item.id not in self._in_flight
            and worker.owns(item.channel, item.address)
        ]

    async def _deliver_items(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            if item.id in self._in_flight:
                continue
            if item.attempts >= MAX_DELIVERY_ROUNDS:
                await self._give_up(item.id, f"gave up after {item.attempts} rounds")
                continue
            try:
                messages = tuple(_MESSAGES.validate_python(item.payload))
            except ValidationError:
                await self._give_up(item.id, "payload is not a list of messages")
                continue
            await self._deliver(
                outbox_id=item.id,
                conversation_id=item.conversation_id,
                to=item.address,
                messages=messages,
            )

    async def _deliver(
        self,
        *,
        outbox_id: int,
        conversation_id: int,
        to: str,
        messages: Sequence[Message],
        reply_token: str | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        store = self.runtime.store
        self._in_flight.add(outbox_id)
        try:
            await self.delivery.deliver(
                to,
                render(messages),
                # Stable across retries, rounds and restarts: the retry keys come from it.
                message_key=f"line-outbox:{outbox_id}:{conversation_id}:{to}",
                reply_token=reply_token,
                occurred_at=occurred_at,
            )
        except LineDeliveryFailed as failure:
            if failure.retryable:
                log.warning("LINE message %s not delivered, will retry: %s", outbox_id, failure)
                await store.bump_attempt(outbox_id, str(failure))
            else:
                await self._give_up(outbox_id, str(failure))
            return
        finally:
            self._in_flight.discard(outbox_id)
        await self._sent.submit(outbox_id)

    async def _give_up(self, outbox_id: int, reason: str) -> None:
        log.error("LINE message %s failed for good: %s", outbox_id, reason)
        self.runtime.metrics.deliveries_failed.labels(channel=Channel.LINE.value).inc()
        await self.runtime.store.mark_failed(outbox_id, reason)

    # ------------------------------------------------------------ outside the flow

    async def _kind_reply(
        self, event: LineEvent, key: ConversationKey, media: Media, inbox_id: int
    ) -> None:
        stored = await self.runtime.store.load(key)
        if stored is not None and stored.mode is not Mode.BOT:
            return  # an agent has the conversation; the bot says nothing
        question = (
            self.runtime.service.engine_for(stored).question(stored.state) if stored else None
        )
        thanks = KIND_REPLIES.get(media.type, "")
        ask = ASK_FOR_BUTTON if question is not None else ASK_FOR_TEXT
        messages: list[Message] = [TextOut(text=thanks + ask)]
        if question is not None:
            messages.append(question)
        await self._send_now(event, messages, inbox_id)

    async def _send_now(self, event: LineEvent, messages: Sequence[Message], inbox_id: int) -> None:
        """A reply outside the conversation (no outbox row); a failure is raised so the worker
        records it on the inbox event."""
        await self.delivery.deliver(
            event.chat_id,
            render(messages),
            message_key=f"line-inbox:{inbox_id}:{event.id}",
            reply_token=event.reply_token,
            occurred_at=event.occurred_at,
        )

    def _loading_later(self, event: LineEvent) -> asyncio.TimerHandle | None:
        """A timer (cheaper than a task per turn: most turns end long before it fires)."""
        after = self.plugin.loading_after
        if after is None or not event.in_chat_with_user:
            return None
        return asyncio.get_running_loop().call_later(after, self._start_loading, event.chat_id)

    def _start_loading(self, chat_id: str) -> None:
        self.runtime.worker.spawn(self._show_loading(chat_id))

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

    async def _every(
        self,
        seconds: float,
        job: Callable[[], Awaitable[None]],
        name: str,
        *,
        first: float | None = None,
    ) -> None:
        await asyncio.sleep(seconds if first is None else first)
        while True:
            try:
                await job()
            except Exception:
                log.exception("LINE %s failed; next try in %.0fs", name, seconds)
            await asyncio.sleep(seconds)


@dataclass(frozen=True, eq=False)
class LineSender:
    """`runtime.senders[Channel.LINE]`: pushes outside a webhook reply (e.g. an agent's)."""

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


async def _webhook(scope: Scope, receive: Receive, send: Send) -> None:
    bot: LineBot | None = getattr(scope["app"].state, "line", None)
    if bot is None:  # the lifespan has not set the channel up (yet)
        await answer(send, 503, {"error": "starting"})
        return
    await bot.webhook(scope, receive, send)
