"""Delivery of what turns saved in the outbox, for every channel's Courier: in each
conversation's order, retried in rounds while the channel fails, repaired after a crash.

A turn's reply goes out right after its turn is saved (`deliver_now`). A conversation with an
item left undelivered (a failed round, a previous run's) is "behind": its newer items wait, and
a catch-up delivers its items oldest first, trying again after CATCH_UP_FIRST seconds and then
at doubling pauses of at most CATCH_UP_MOST, so delivery resumes moments after the channel is
back. A sweep every SWEEP_EVERY seconds catches anything left unnoticed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import TypeAdapter, ValidationError

from bot.core.group_commit import GroupCommit
from bot.core.leases import LeaseKeeper, conversation_lease
from bot.core.ports import Attempt, Courier, Reply
from bot.errors import ChannelError, DeliveryFailed
from bot.metrics import Metrics
from bot.models import Channel, ConversationKey, Message, Outbound
from bot.records import OutboxItem
from bot.store import SqlStore

log = logging.getLogger(__name__)

SWEEP_EVERY: Final = 30.0
"""Seconds between looks for outbox items whose delivery was cut short unnoticed."""
ORPHAN_AFTER: Final = 60.0
"""Age (seconds) after which a pending item is nobody's in-process delivery any more."""
LEASED_SWEEP_EVERY: Final = 5.0
"""With several workers: seconds between looks for replies a dead worker left undelivered."""
CATCH_UP_FIRST: Final = 0.5
"""Seconds before conversations left behind are tried again; doubled after each failing try,
up to CATCH_UP_MOST."""
CATCH_UP_MOST: Final = 5.0
MAX_DELIVERY_ROUNDS: Final = 10
GIVE_UP_AFTER: Final = timedelta(minutes=30)
"""An item is marked failed once it has had MAX_DELIVERY_ROUNDS rounds and is this old (a
channel refusing a while, e.g. an outage, never loses a message)."""
PAGE: Final = 1000
_DONE_REMEMBERED: Final = 10_000  # outbox ids settled here, to never deliver one twice
_MESSAGES: Final = TypeAdapter(list[Outbound])


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxTuning:
    sweep_every: float = SWEEP_EVERY
    orphan_after: float = ORPHAN_AFTER
    catch_up_first: float = CATCH_UP_FIRST
    catch_up_most: float = CATCH_UP_MOST


class Outbox:
    """The `Deliveries` port: delivers the outbox items of the users this process owns."""

    def __init__(
        self,
        *,
        store: SqlStore,
        couriers: Mapping[Channel, Courier],
        metrics: Metrics,
        leases: LeaseKeeper | None = None,
        tuning: OutboxTuning | None = None,
    ) -> None:
        """`leases`: several workers share the database; this one delivers for the
        conversations whose lease it holds (taking one for items nobody delivers)."""
        self.store = store
        self.couriers = couriers  # the wiring fills it in before anything runs
        self.metrics = metrics
        self.tuning = tuning or OutboxTuning()
        self.leases = leases
        self._leased: dict[int, str] = {}  # conversation id -> its lease, while behind here
        self._in_flight: set[int] = set()  # outbox ids being delivered right now
        self._behind: set[int] = set()  # conversation ids
        self._maybe_delivered: set[int] = set()  # outbox ids an earlier try may have delivered
        # Outbox ids of turns saved here whose delivery waited behind older ones without a try:
        # their reply tokens are unused, still worth more than a (paid) push while fresh.
        self._untried: set[int] = set()
        # Outbox ids settled here -> "sent" or "failed" (re-marked by the sweep if marking
        # failed while the database was away).
        self._done: OrderedDict[int, str] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._catching_up: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        # Deliveries finishing together share one UPDATE; each still awaits its own commit.
        self._sent = GroupCommit(store.mark_sent_many)

    async def start(self) -> None:
        """Deliver what a previous run left pending, then keep sweeping."""
        if not self.couriers:
            return
        # Taken before the inbox recovers unprocessed events, and only of this process's
        # users: so only items of the previous run are in it, and nobody is delivering them
        # any more, whatever their age.
        orphans = await self._held(await self._pending())
        if orphans:
            log.info("delivering %d messages left undelivered by the last run", len(orphans))
        # Their tries may have reached the user just before the stop (LINE: a reply token
        # spent): a channel that can tell must not deliver them twice.
        self._maybe_delivered.update(item.id for item in orphans)
        self._fall_behind({item.conversation_id for item in orphans}, at_once=True)
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        tasks = [task for task in (self._catching_up, self._sweeping) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver_now(
        self,
        reply: Reply,
        key: ConversationKey,
        messages: Sequence[Message] | None = None,
        *,
        reply_token: str | None = None,
        event_at: datetime | None = None,
    ) -> None:
        """A turn's reply, right after it is saved, unless older replies of its conversation
        are still waiting: then it waits its turn behind them."""
        if reply.forgotten and reply.messages and key.channel in self.couriers:
            await self._deliver_once(reply, key, reply_token=reply_token, event_at=event_at)
            return
        if reply.outbox_id is None or key.channel not in self.couriers:
            return
        item = _fresh_item(
            reply.outbox_id, reply.conversation_id, key, reply_token=reply_token, event_at=event_at
        )
        sending = reply.messages if messages is None else tuple(messages)
        async with self._lock(item.conversation_id):
            if item.conversation_id in self._behind or item.id in self._done:
                if item.id not in self._done:
                    self._untried.add(item.id)
                self._fall_behind({item.conversation_id})
                return
            delivered = await self._deliver(item, sending, Attempt(first=True))
        if not delivered:
            await self._held([item])  # the turn's worker holds it: kept while behind
            self._fall_behind({item.conversation_id})

    async def _deliver_once(
        self,
        reply: Reply,
        key: ConversationKey,
        *,
        reply_token: str | None,
        event_at: datetime | None,
    ) -> None:
        """The last words to a user whose data was just deleted: no outbox row may outlive the
        deletion, so they go out once, now (an id of their own keeps LINE's retry keys apart)."""
        item = _fresh_item(-time.time_ns(), 0, key, reply_token=reply_token, event_at=event_at)
        try:
            await self.couriers[key.channel].deliver(item, reply.messages, Attempt(first=True))
        except ChannelError as error:
            log.warning("the deletion notice was not delivered: %s", error)

    async def sweep(self) -> None:
        """Catch up on pending items nobody is delivering (a round cut short unnoticed)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.tuning.orphan_after)
        pending = await self._pending()
        # Settled here but the mark did not reach the database (it was away): mark them now.
        unmarked = [item.id for item in pending if self._done.get(item.id) == "sent"]
        if unmarked:
            await self.store.mark_sent_many(unmarked)
        if self.leases is None:
            # Not maybe-delivered: a try of this run cut short marks its own item
            # (`_deliver`), and the last run's items were taken at start.
            items = [
                item for item in pending if item.created_at <= cutoff and item.id not in self._done
            ]
        else:
            # Whoever delivers an item holds its conversation's lease: an item whose lease is
            # free, whatever its age, is a stopped or dead worker's, whose last try may have
            # reached the user.
            leases = self.leases
            items = await self._held(
                [
                    item
                    for item in pending
                    if item.id not in self._done
                    and item.conversation_id not in self._leased
                    and not leases.holds(conversation_lease(item.channel, item.address))
                ]
            )
            self._maybe_delivered.update(item.id for item in items)
        self._fall_behind({item.conversation_id for item in items})

    # ------------------------------------------------------------ rounds

    def _fall_behind(self, conversation_ids: set[int], *, at_once: bool = False) -> None:
        """Have these conversations' pending items delivered by the catch-up, in order."""
        self._behind |= conversation_ids
        if self._behind and self._catching_up is None:
            first = 0.0 if at_once else self.tuning.catch_up_first
            self._catching_up = asyncio.get_running_loop().create_task(self._catch_up(first))

    async def _catch_up(self, first: float) -> None:
        pause = first
        try:
            while self._behind:
                await asyncio.sleep(pause)
                try:
                    through = await self._catch_up_round()
                except Exception:
                    log.exception("outbox catch-up failed; trying again")
                    through = False
                least, most = self.tuning.catch_up_first, self.tuning.catch_up_most
                pause = least if through else min(max(pause * 2, least), most)
        finally:
            self._catching_up = None

    async def _catch_up_round(self) -> bool:
        """One pass over the conversations behind; False when a channel still fails (the
        pass stops at the first such failure: no point knocking for every user)."""
        for conversation_id in sorted(self._behind):
            async with self._lock(conversation_id):
                items = await self.store.outbox_pending(
                    limit=100, conversation_ids=[conversation_id]
                )
                items = [item for item in items if item.id not in self._done]
                if not items:
                    self._behind.discard(conversation_id)
                    await self._let_go(conversation_id)
                    continue
                for item in items:
                    if not await self._deliver_pending(item):
                        return False
        return True

    async def _deliver_pending(self, item: OutboxItem) -> bool:
        """A pending item, in a later round; False when it is still pending."""
        if item.channel not in self.couriers:
            return True  # another process's channel (not set up here)
        if item.attempts >= MAX_DELIVERY_ROUNDS and (
            datetime.now(UTC) - item.created_at > GIVE_UP_AFTER
        ):
            await self._give_up(item, f"gave up after {item.attempts} rounds")
            return True
        try:
            messages = tuple(_MESSAGES.validate_python(item.payload))
        except ValidationError:
            await self._give_up(item, "payload is not a list of messages")
            return True
        attempt = Attempt(
            first=item.id in self._untried,
            maybe_delivered=item.id in self._maybe_delivered,
            retry=False,
        )
        return await self._deliver(item, messages, attempt)

    async def _deliver(
        self, item: OutboxItem, messages: Sequence[Message], attempt: Attempt
    ) -> bool:
        """True when the item is settled (delivered, or failed for good); False when it stays
        pending for another round."""
        self._in_flight.add(item.id)
        self._untried.discard(item.id)
        try:
            await self.couriers[item.channel].deliver(item, messages, attempt)
        except DeliveryFailed as failure:
            if failure.retryable:
                log.warning("message %s not delivered, will retry: %s", item.id, failure)
                if failure.maybe_delivered:
                    self._maybe_delivered.add(item.id)
                await self.store.bump_attempt(item.id, str(failure))
                return False
            await self._give_up(item, str(failure))
            return True
        except BaseException:
            # Cut short (cancelled, a bug): the messages may have gone out, so the next round
            # lets the channel tell (LINE: the reply token) before delivering again.
            self._maybe_delivered.add(item.id)
            raise
        finally:
            self._in_flight.discard(item.id)
        self._settled(item.id, "sent")
        await self._sent.submit(item.id)
        return True

    async def _give_up(self, item: OutboxItem, reason: str) -> None:
        self._settled(item.id, "failed")
        log.error("%s message %s failed for good: %s", item.channel.value, item.id, reason)
        self.metrics.deliveries_failed.labels(channel=item.channel.value).inc()
        await self.store.mark_failed(item.id, reason)

    def _settled(self, outbox_id: int, status: str) -> None:
        self._maybe_delivered.discard(outbox_id)
        self._untried.discard(outbox_id)
        self._done[outbox_id] = status
        if len(self._done) > _DONE_REMEMBERED:
            self._done.popitem(last=False)

    async def _held(self, items: list[OutboxItem]) -> list[OutboxItem]:
        """The items whose conversation this process delivers for: all, alone; else those
        whose lease it holds or can take now (kept until the conversation is caught up)."""
        if self.leases is None or not items:
            return items
        names = {
            item.conversation_id: conversation_lease(item.channel, item.address)
            for item in items
            if item.conversation_id not in self._leased
        }
        granted = await self.leases.acquire(names.values()) if names else set()
        self._leased.update({cid: name for cid, name in names.items() if name in granted})
        return [item for item in items if item.conversation_id in self._leased]

    async def _let_go(self, conversation_id: int) -> None:
        name = self._leased.pop(conversation_id, None)
        if name is not None and self.leases is not None:
            await self.leases.release([name])

    def _lock(self, conversation_id: int) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    async def _pending(self) -> list[OutboxItem]:
        """Pending items of this process's channels and users that it is not delivering now."""
        found: list[OutboxItem] = []
        after = 0
        while True:
            page = await self.store.outbox_pending(limit=PAGE, after_id=after)
            found += [
                item
                for item in page
                if item.id not in self._in_flight and item.channel in self.couriers
            ]
            if len(page) < PAGE:
                return found
            after = page[-1].id

    async def _sweep_forever(self) -> None:
        every = self.tuning.sweep_every
        if self.leases is not None:  # a dead worker's replies go out within seconds
            every = min(every, LEASED_SWEEP_EVERY)
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except Exception:
                log.exception("outbox sweep failed; next in %.0fs", every)


def _fresh_item(
    outbox_id: int,
    conversation_id: int,
    key: ConversationKey,
    *,
    reply_token: str | None,
    event_at: datetime | None,
) -> OutboxItem:
    """An item as its turn just saved it (its messages are passed along, not read back)."""
    return OutboxItem(
        id=outbox_id,
        conversation_id=conversation_id,
        channel=key.channel,
        address=key.address,
        payload=[],
        status="pending",
        attempts=0,
        last_error=None,
        created_at=datetime.now(UTC),
        reply_token=reply_token,
        event_at=event_at,
    )
