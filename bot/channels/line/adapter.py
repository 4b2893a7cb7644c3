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
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError
from starlette.types import Receive, Scope, Send

from bot.channels.line.api import REQUEST_TIMEOUT, LineApi
from bot.channels.line.delivery import (
    REPLY_TOKEN_LIFE,
    RETRY_DELAYS,
    Delivery,
    LineDeliveryFailed,
)
from bot.channels.line.render import render
from bot.channels.line.webhook import (
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
from bot.core.group_commit import GroupCommit
from bot.core.inbox import MARKED
from bot.core.service import TURNS_PER_BATCH
from bot.errors import BotError
from bot.http.asgi import add_post, answer, header, read_body
from bot.models import (
    CardOut,
    Channel,
    ChoicesOut,
    ConversationKey,
    Mode,
    Outbound,
    TextOut,
)
from bot.records import InboxEvent, OutboxItem
from bot.wiring import Runtime

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
"""Seconds between looks for outbox items whose delivery was cut short unnoticed."""
ORPHAN_AFTER: Final = 60.0
"""Age (seconds) after which a pending item is nobody's in-process delivery any more."""
CATCH_UP_FIRST: Final = 0.5
"""Seconds before conversations left behind (a failed delivery) are tried again; doubled after
each try LINE fails, up to CATCH_UP_MOST, so delivery resumes moments after LINE is back."""
CATCH_UP_MOST: Final = 5.0
MAX_DELIVERY_ROUNDS: Final = 10
GIVE_UP_AFTER: Final = timedelta(minutes=30)
"""An outbox item is marked failed once it has had MAX_DELIVERY_ROUNDS rounds and is this old
(LINE refusing a while, e.g. an outage, never loses a message)."""
_DONE_REMEMBERED: Final = 10_000  # outbox ids settled here, to never deliver one twice
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
        catch_up_first: float = CATCH_UP_FIRST,
        catch_up_most: float = CATCH_UP_MOST,
    ) -> None:
        self.loading_after = loading_after
        self.retry_delays = tuple(retry_delays)
        self.reply_token_life = reply_token_life
        self.request_timeout = request_timeout
        self.sweep_every = sweep_every
        self.orphan_after = orphan_after
        self.purge_every = purge_every
        self.turns_at_once = turns_at_once
        self.catch_up_first = catch_up_first
        self.catch_up_most = catch_up_most

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
    # Delivery keeps each conversation's order: a conversation with an item left undelivered
    # (a failed round, a previous run's) is "behind", and its newer items wait for the
    # catch-up, which delivers its items oldest first (`_catch_up`).
    _behind: set[int] = field(default_factory=set)  # conversation ids
    _token_unknown: set[int] = field(default_factory=set)  # outbox ids whose token may be spent
    # Outbox ids settled here -> "sent" or "failed" (re-marked by the sweep if marking failed).
    _done: OrderedDict[int, str] = field(default_factory=OrderedDict)
    _conversation_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _catching_up: asyncio.Task[None] | None = None
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
            log.info("delivering %d LINE messages left undelivered by the last run", len(orphans))
        # Their reply tokens may have been spent just before the stop: LINE refusing a fresh
        # one then means the reply went out (so it is not pushed a second time).
        self._token_unknown.update(item.id for item in orphans)
        self._fall_behind({item.conversation_id for item in orphans}, at_once=True)
        self._tasks += [
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
        tasks = [*self._tasks, *([self._catching_up] if self._catching_up else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()

    # ------------------------------------------------------------ webhook

    async def webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /webhooks/line, as plain ASGI (see `bot.http.asgi`)."""
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
            if await self.runtime.store.claim_event(inbox.id):  # at most once
                await self._send_now(event, [TextOut(text=GROUP_NOTE)], inbox.id)
            return MARKED
        if not event.in_chat_with_user:
            return None
        key = ConversationKey(channel=Channel.LINE, address=event.chat_id)
        if isinstance(content, Unfollowed):
            await self.runtime.store.mark_inactive(key)
            return None
        if isinstance(content, Media):
            await self._kind_reply(event, key, content, inbox.id)
            return MARKED
        loading: asyncio.TimerHandle | None = None
        try:
            async with self._turns:
                # The animation's timer starts when the turn starts computing, not when the
                # event arrived: it is for a turn that itself takes long. Under a backlog every
                # queued event has already waited over LOADING_AFTER, and timing from arrival
                # would fire an API call per event, slowing the backlog further.
                loading = self._loading_later(event)
                reply = await self.runtime.service.handle(
                    key,
                    content,
                    outbox=True,
                    inbox_id=inbox.id,
                    reply_token=event.reply_token,
                    event_at=event.occurred_at,
                )
            # From here on the turn (and the event's mark) is committed.
            if reply.outbox_id is not None and reply.messages:
                await self._deliver_new(
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
        """Catch up on pending items nobody is delivering (a round cut short unnoticed)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.plugin.orphan_after)
        pending = await self._pending_line_items()
        # Settled here but the mark did not reach the database (it was away): mark them now.
        unmarked = [item.id for item in pending if self._done.get(item.id) == "sent"]
        if unmarked:
            await self.runtime.store.mark_sent_many(unmarked)
        # Their tokens were not spent by this run (a try cut short marks its own item as
        # token-unknown in `_deliver`), nor by the last one (its items were taken at start).
        items = [
            item for item in pending if item.created_at <= cutoff and item.id not in self._done
        ]
        self._fall_behind({item.conversation_id for item in items})

    async def purge(self) -> None:
        days = self.runtime.settings.retention_days
        purged = await self.runtime.store.purge_inactive(datetime.now(UTC) - timedelta(days=days))
        if purged:
            log.info("deleted %d conversations of users gone over %d days", purged, days)

    async def _pending_line_items(self) -> list[OutboxItem]:
        """Pending LINE items of this worker's users that it is not delivering right now."""
        worker = self.runtime.worker
        found: list[OutboxItem] = []
        after = 0
        while True:
            page = await self.runtime.store.outbox_pending(
                limit=1000, channel=Channel.LINE, after_id=after
            )
            found += [
                item
                for item in page
                if item.id not in self._in_flight and worker.owns(item.channel, item.address)
            ]
            if len(page) < 1000:
                return found
            after = page[-1].id

    async def _deliver_new(
        self,
        *,
        outbox_id: int,
        conversation_id: int,
        to: str,
        messages: Sequence[Message],
        reply_token: str | None,
        occurred_at: datetime,
    ) -> None:
        """Deliver a turn's reply right away, unless older replies of its conversation are
        still waiting: then it waits its turn behind them."""
        async with self._conversation_lock(conversation_id):
            if conversation_id in self._behind or outbox_id in self._done:
                self._fall_behind({conversation_id})
                return
            delivered = await self._deliver(
                outbox_id=outbox_id,
                conversation_id=conversation_id,
                to=to,
                messages=messages,
                reply_token=reply_token,
                occurred_at=occurred_at,
            )
        if not delivered:
            self._fall_behind({conversation_id})

    def _fall_behind(self, conversation_ids: set[int], *, at_once: bool = False) -> None:
        """Have these conversations' pending items delivered by the catch-up, in order."""
        self._behind |= conversation_ids
        if self._behind and self._catching_up is None:
            first = 0.0 if at_once else self.plugin.catch_up_first
            self._catching_up = asyncio.get_running_loop().create_task(self._catch_up(first))

    async def _catch_up(self, first: float) -> None:
        """Deliver the conversations left behind, each oldest item first; while LINE keeps
        failing, try again after a pause that doubles (CATCH_UP_MOST at most)."""
        pause = first
        try:
            while self._behind:
                await asyncio.sleep(pause)
                try:
                    through = await self._catch_up_round()
                except Exception:
                    log.exception("LINE catch-up failed; trying again")
                    through = False
                pause = (
                    self.plugin.catch_up_first
                    if through
                    else min(max(pause * 2, self.plugin.catch_up_first), self.plugin.catch_up_most)
                )
        finally:
            self._catching_up = None

    async def _catch_up_round(self) -> bool:
        """One pass over the conversations behind; False when LINE still fails (the pass
        stops at the first such failure: no point knocking for every user)."""
        for conversation_id in sorted(self._behind):
            async with self._conversation_lock(conversation_id):
                items = await self.runtime.store.outbox_pending(
                    limit=100, channel=Channel.LINE, conversation_ids=[conversation_id]
                )
                items = [item for item in items if item.id not in self._done]
                if not items:
                    self._behind.discard(conversation_id)
                    continue
                for item in items:
                    if not await self._deliver_item(item):
                        return False
        return True

    async def _deliver_item(self, item: OutboxItem) -> bool:
        """A pending item, in a later round; False when it is still pending (LINE failing)."""
        if item.attempts >= MAX_DELIVERY_ROUNDS and (
            datetime.now(UTC) - item.created_at > GIVE_UP_AFTER
        ):
            await self._give_up(item.id, f"gave up after {item.attempts} rounds")
            return True
        try:
            messages = tuple(_MESSAGES.validate_python(item.payload))
        except ValidationError:
            await self._give_up(item.id, "payload is not a list of messages")
            return True
        maybe_spent = item.id in self._token_unknown
        return await self._deliver(
            outbox_id=item.id,
            conversation_id=item.conversation_id,
            to=item.address,
            messages=messages,
            # Only a token that may have been spent is tried again (a refusal then means the
            # reply went out); a token refused or never tried in this run is worth nothing.
            reply_token=item.reply_token if maybe_spent else None,
            occurred_at=item.event_at,
            token_maybe_spent=maybe_spent,
            retry=False,
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
        token_maybe_spent: bool = False,
        retry: bool = True,
    ) -> bool:
        """True when the item is settled (delivered, or failed for good); False when it stays
        pending for another round."""
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
                token_maybe_spent=token_maybe_spent,
                retry=retry,
            )
        except LineDeliveryFailed as failure:
            if failure.retryable:
                log.warning("LINE message %s not delivered, will retry: %s", outbox_id, failure)
                if failure.reply_unclear:
                    self._token_unknown.add(outbox_id)
                await store.bump_attempt(outbox_id, str(failure))
                return False
            await self._give_up(outbox_id, str(failure))
            return True
        except BaseException:
            # Cut short (cancelled, a bug): the reply may have reached LINE, so its token
            # decides the next round, not a push.
            if reply_token is not None:
                self._token_unknown.add(outbox_id)
            raise
        finally:
            self._in_flight.discard(outbox_id)
        self._settled(outbox_id, "sent")
        await self._sent.submit(outbox_id)
        return True

    def _settled(self, outbox_id: int, status: str) -> None:
        self._token_unknown.discard(outbox_id)
        self._done[outbox_id] = status
        if len(self._done) > _DONE_REMEMBERED:
            self._done.popitem(last=False)

    def _conversation_lock(self, conversation_id: int) -> asyncio.Lock:
        lock = self._conversation_locks.get(conversation_id)
        if lock is None:
            lock = self._conversation_locks[conversation_id] = asyncio.Lock()
        return lock

    async def _give_up(self, outbox_id: int, reason: str) -> None:
        self._settled(outbox_id, "failed")
        log.error("LINE message %s failed for good: %s", outbox_id, reason)
        self.runtime.metrics.deliveries_failed.labels(channel=Channel.LINE.value).inc()
        await self.runtime.store.mark_failed(outbox_id, reason)

    # ------------------------------------------------------------ outside the flow

    async def _kind_reply(
        self, event: LineEvent, key: ConversationKey, media: Media, inbox_id: int
    ) -> None:
        # Not a turn (nothing saved with it): the event is claimed first, so the reply goes
        # out at most once even if two workers were given it (a crash right after the claim
        # loses this one courtesy reply, never doubles it).
        if not await self.runtime.store.claim_event(inbox_id):
            return
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
