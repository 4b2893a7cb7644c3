"""Processes durably recorded inbound events after the webhook has answered.

Events of one conversation run one at a time, oldest first; different conversations run in
parallel. Whatever was recorded but not processed when the process stopped is picked up by
`recover()` at start-up, so an acknowledged event is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Final

from bot.core.backpressure import Foreground
from bot.core.group_commit import GroupCommit
from bot.core.leases import LeaseKeeper, conversation_lease
from bot.core.ports import EventHandler, Handled
from bot.errors import StoreError
from bot.models import Channel
from bot.records import InboxEvent, NewEvent
from bot.store import AlreadyHandled, SqlStore
from bot.store.notify import InboxBell
from bot.tracing import span

log = logging.getLogger(__name__)

# A store error is retried after RETRY_FIRST seconds, doubling up to RETRY_MOST, until the event
# settles. After SUSPECT_AFTER errors in a row while the database answers, the event itself is
# the problem (text it refuses, say): it is settled as failed, with the error kept on its row.
RETRY_FIRST: Final = 0.5
RETRY_MOST: Final = 10.0
SUSPECT_AFTER: Final = 8

# `follow` (a separate worker process): how it looks for events the web servers recorded.
FOLLOW_BATCH: Final = 500  # events read at once
FOLLOW_BUSY: Final = 0.005  # seconds between looks while events are coming
FOLLOW_BACKED_UP: Final = 0.025  # ... while some are still queued here
FOLLOW_IDLE: Final = 0.05  # ... once none came for FOLLOW_QUIET_AFTER seconds
FOLLOW_QUIET_AFTER: Final = 2.0
FOLLOW_RESCAN: Final = 3.0  # seconds between looks at every pending event, old ones too
FOLLOW_BACKLOG: Final = 2000  # queued events above which it stops reading more for a moment
FOLLOW_RESCAN_PAGE: Final = 5000  # ids read at once by the rescan


class Worker:
    def __init__(
        self,
        *,
        store: SqlStore,
        local: bool = True,
        leases: LeaseKeeper | None = None,
        retry_first: float = RETRY_FIRST,
        foreground: Foreground | None = None,
    ) -> None:
        """`local` False: events are only recorded here; another process (`yarigai worker`)
        runs them, finding them with `follow`. `leases`: several workers share the database;
        this one runs the events of the conversations whose lease it holds (a user's events
        stay with one worker at a time, so they still run one at a time, in order). None: this
        is the only process running events. `retry_first`: the first pause after a store
        error (tests shorten it)."""
        self.store = store
        self.retry_first = retry_first
        self.foreground = foreground or Foreground()
        self.local = local
        self.leases = leases
        self._leased: set[tuple[str, str]] = set()  # conversations whose lease a queue uses
        self._skipped: set[tuple[str, str]] = set()  # events seen while another worker held them
        self.handlers: dict[str, EventHandler] = {}
        self._queues: dict[tuple[str, str], list[InboxEvent]] = {}
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._known: set[int] = set()  # inbox ids queued or being processed, never taken twice
        self._store_failures: dict[int, int] = {}  # inbox id -> store errors in a row
        self.settled_failed = 0  # events settled as failed by this worker (bad events)
        self._last_found = 0  # events the last look at the inbox found
        self._stopping = asyncio.Event()  # set by close(): ends retry pauses at once
        self._closed = False
        # Webhook requests arriving together are recorded in one transaction.
        self._inbox = GroupCommit(store.record_events)

    def register(self, channel: str, handler: EventHandler) -> None:
        self.handlers[channel] = handler

    def serving(self) -> AbstractContextManager[None]:
        """Hold while acknowledging a webhook: batches of turns give way to it meanwhile."""
        return self.foreground.serving()

    async def submit(
        self,
        *,
        channel: str,
        event_id: str,
        address: str,
        payload: dict[str, Any],
        occurred_at: datetime,
    ) -> bool:
        """Record the event durably and schedule it. False: seen before, nothing to do.

        Returns once the event is committed (batched with concurrent submits)."""
        recorded = await self._inbox.submit(
            NewEvent(
                channel=Channel(channel),
                event_id=event_id,
                address=address,
                payload=payload,
                occurred_at=occurred_at,
            )
        )
        if recorded is None:
            return False
        if self.local:
            self._enqueue(recorded)
        return True

    async def recover(self) -> int:
        """Schedule every recorded, unprocessed event (after a crash or restart)."""
        events = await self._take(await self.store.pending_events(limit=10_000))
        for event in events:
            self._enqueue(event)
        return len(events)

    async def follow(
        self, stop: asyncio.Event, *, pace: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run what web servers record, until `stop` is set (`yarigai worker`).

        Looks for events newer than the last seen every few milliseconds while they come, less
        often when quiet, and now and then for any pending event at all (one recorded late by
        a slower transaction, or retried)."""
        loop = asyncio.get_running_loop()
        newest = 0
        quiet_since = loop.time()
        rescan_at = loop.time()
        # PostgreSQL: woken by each commit that records events, instead of polling.
        bell = InboxBell(self.store.engine) if InboxBell.available(self.store.engine) else None
        try:
            while not stop.is_set():
                if bell is not None:
                    if not bell.listening and loop.time() >= rescan_at:
                        await bell.close()
                        await bell.open()
                    bell.rung.clear()  # before reading: what commits after rings again
                newest, rescan_at, quiet_since = await self._look(
                    stop, pace, newest=newest, rescan_at=rescan_at, quiet_since=quiet_since
                )
                pause = self._pause_after(loop.time() - quiet_since)
                idle = not self.backlog() and self._last_found < FOLLOW_BATCH
                if bell is not None and bell.listening and idle:
                    # Nothing backed up here: wait for the bell (or the safety rescan).
                    pause = max(0.0, rescan_at - loop.time())
                    await _first_of(stop, bell.rung, pause)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
        finally:
            if bell is not None:
                await bell.close()

    async def _look(
        self,
        stop: asyncio.Event,
        pace: Callable[[], Awaitable[None]] | None,
        *,
        newest: int,
        rescan_at: float,
        quiet_since: float,
    ) -> tuple[int, float, float]:
        """One look at the inbox: queue what is this worker's; (newest, rescan_at,
        quiet_since) after it."""
        loop = asyncio.get_running_loop()
        self._last_found = 0
        if pace is not None:
            await pace()  # e.g. let a burst of webhooks through first (backpressure.py)
        try:
            if loop.time() >= rescan_at:
                found = await self._all_pending()
                rescan_at = loop.time() + FOLLOW_RESCAN
            else:
                # In the order recorded, so `newest` never skips one (a rescan, oldest
                # first and cut at FOLLOW_BATCH, could).
                found = await self.store.pending_events(limit=FOLLOW_BATCH, after_id=newest)
                newest = max([newest, *(event.id for event in found)])
        except StoreError as exc:
            # Passing (a locked file, a dropped connection): look again a little later.
            log.warning("could not read the inbox (%s); trying again", type(exc).__name__)
            found = []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_IDLE)
        self._last_found = len(found)
        try:
            found = await self._take(found)
        except StoreError as exc:
            log.warning("could not take leases (%s); trying again", type(exc).__name__)
            found = []
        for event in found:
            self._enqueue(event)
        if found:
            quiet_since = loop.time()
        return newest, rescan_at, quiet_since

    def _pause_after(self, quiet_for: float) -> float:
        if self.backlog() >= FOLLOW_BACKLOG:
            return FOLLOW_BACKED_UP  # enough queued here: let it drain before reading more
        if self._last_found == FOLLOW_BATCH:
            return 0.0
        if self.backlog():
            # New events would only queue behind the backlog: looking less often costs them
            # nothing, and each look is a query.
            return FOLLOW_BACKED_UP
        if quiet_for < FOLLOW_QUIET_AFTER:
            return FOLLOW_BUSY
        return FOLLOW_IDLE

    async def _all_pending(self) -> list[InboxEvent]:
        """Every pending event this worker does not know yet, in the order recorded (so
        stragglers behind a long backlog of other workers' events are found too). Ids first,
        page by page: behind a backlog most are queued here already, and reading their
        payloads again every few seconds cost a sixth of a busy worker's time."""
        fresh: list[int] = []
        after = 0
        while True:
            page = await self.store.pending_ids(limit=FOLLOW_RESCAN_PAGE, after_id=after)
            fresh += [inbox_id for inbox_id in page if inbox_id not in self._known]
            if len(page) < FOLLOW_RESCAN_PAGE:
                break
            after = page[-1]
        return await self.store.pending_by_id(fresh) if fresh else []

    def backlog(self) -> int:
        """Events queued or running here."""
        return sum(len(queue) for queue in self._queues.values()) + len(self._running)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task, keeping a reference so it is neither lost nor collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def idle(self, grace: float = 10.0) -> None:
        """Wait until nothing is queued or running (tests, graceful shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (self._running or self._tasks) and loop.time() < deadline:
            pending = list(self._running.values()) + list(self._tasks)
            await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))

    async def close(self, grace: float = 5.0) -> None:
        self._closed = True
        self._stopping.set()
        # Events not started yet stay pending in the inbox for the next run; only the ones
        # running now are finished (a worker started meanwhile must not meet them half done).
        for key, queue in self._queues.items():
            # The head of a running queue is running: it stays, and its drain finishes it.
            kept = 1 if key in self._running and queue else 0
            for event in queue[kept:]:
                self._known.discard(event.id)
            del queue[kept:]
        await self.idle(grace)
        left = [*self._running.values(), *self._tasks]
        for task in left:
            task.cancel()
        if left:
            # Let them unwind (roll back, return connections) while the store is still open:
            # a task cancelled after the engine is disposed can wait forever on its driver.
            await asyncio.wait(left, timeout=grace)

    # ------------------------------------------------------------ internals

    async def _take(self, events: list[InboxEvent]) -> list[InboxEvent]:
        """The events this worker is to run: all, alone; else those of conversations it
        holds or can take the lease of now (the others are another worker's)."""
        if self.leases is None or not events:
            return events
        wanted = {
            (e.channel.value, e.address)
            for e in events
            if e.id not in self._known and (e.channel.value, e.address) not in self._leased
        }
        taken: set[tuple[str, str]] = set()
        if wanted:
            granted = await self.leases.acquire(conversation_lease(c, a) for c, a in wanted)
            taken = {(c, a) for c, a in wanted if conversation_lease(c, a) in granted}
            self._leased |= taken
        mine = [e for e in events if (e.channel.value, e.address) in self._leased]
        # A conversation taken now may have older events than these, skipped earlier while
        # another worker held it (which may have died or stalled with them): all of them
        # are this worker's now, in order.
        seen = {e.id for e in mine}
        for channel, address in taken & self._skipped:
            older = await self.store.pending_events(limit=1000, channel=channel, address=address)
            mine += [e for e in older if e.id not in seen]
        self._skipped -= taken
        self._skipped |= {(e.channel.value, e.address) for e in events} - self._leased
        if len(self._skipped) > 100_000:  # forgotten: the rescan finds what they had
            self._skipped.clear()
        return mine

    def lost(self, names: set[str]) -> None:
        """`LeaseKeeper.on_lost`: those conversations passed to another worker; what is queued
        for them here is left to it (what runs now finishes, the inbox mark decides)."""
        for key in list(self._leased):
            if conversation_lease(*key) in names:
                self._leased.discard(key)
                for event in self._queues.get(key, [])[1:]:
                    self._known.discard(event.id)
                queue = self._queues.get(key)
                if queue:
                    del queue[1:]

    def _enqueue(self, event: InboxEvent) -> None:
        key = (event.channel, event.address)
        if event.id in self._known:
            return
        if len(self._known) > 100_000:  # old ids are long processed; forget the older half
            self._known = set(sorted(self._known)[50_000:])
        self._known.add(event.id)
        self._queues.setdefault(key, []).append(event)
        if key not in self._running and not self._closed:
            task = asyncio.get_running_loop().create_task(self._drain(key))
            self._running[key] = task

    async def _drain(self, key: tuple[str, str]) -> None:
        try:
            while (queue := self._queues.get(key)) and not self._closed:
                queue.sort(key=lambda e: (e.occurred_at, e.id))
                event = queue[0]
                try:
                    settled = await self._process(event)
                except Exception:
                    log.exception("could not settle %s event %s", event.channel, event.id)
                    settled = False
                if settled:
                    _drop(queue, event)
                    continue
                # Not settled (the database away, say): this user's later events wait behind
                # it, so their answers keep their order; other users go on.
                tries = self._store_failures.get(event.id, 1)
                await self._pause(min(RETRY_MOST, self.retry_first * 2 ** (tries - 1)))
                if not await self._still_pending(event):
                    _drop(queue, event)  # it committed before the error came back: done
                    self._store_failures.pop(event.id, None)
        finally:
            self._running.pop(key, None)
            queue = self._queues.pop(key, None) or []
            for event in queue:  # closing: left pending in the inbox for the next run
                self._known.discard(event.id)
            if key in self._leased and self.leases is not None:
                self._leased.discard(key)
                self.spawn(self.leases.release([conversation_lease(*key)]))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _still_pending(self, event: InboxEvent) -> bool:
        """Whether `event` is still unprocessed (True while the database cannot tell)."""
        try:
            return await self.store.pending_event(event.id) is not None
        except StoreError:
            return True

    async def _process(self, event: InboxEvent) -> bool:
        """Run `event`; False when it is to be tried again (a store error)."""
        if event.processed_at is not None:
            return True
        with span(f"event {event.channel}", inbox=event.id):
            return await self._run(event)

    async def _run(self, event: InboxEvent) -> bool:
        handler = self.handlers.get(event.channel)
        if handler is None:
            log.warning("no handler for %s event %s; left for later", event.channel, event.id)
            return True
        try:
            outcome = await handler(event)
            if outcome is not Handled.WITH_TURN:
                await self.store.mark_processed(event.id)
        except AlreadyHandled:
            # Someone else ran it first (another worker given the same event, by mistake):
            # nothing of this run was written.
            log.info("%s event %s was handled elsewhere; skipped", event.channel, event.id)
        except StoreError as exc:
            return await self._store_failed(event, exc)
        except Exception as exc:
            # A bug or a channel refusing for good: recorded with the event, never re-run.
            log.exception("processing %s event %s failed", event.channel, event.id)
            return await self._settle_failed(event, exc)
        self._store_failures.pop(event.id, None)
        return True

    async def _store_failed(self, event: InboxEvent, exc: StoreError) -> bool:
        """Retried with backoff until the event settles: a database away for a while only
        delays it; an event that keeps failing while the database answers is settled as
        failed in the end."""
        tries = self._store_failures.get(event.id, 0) + 1
        self._store_failures[event.id] = tries
        if tries >= SUSPECT_AFTER and await self._store_answers():
            log.error(
                "%s event %s failed %d times while the database answers; settled as failed",
                event.channel,
                event.id,
                tries,
            )
            return await self._settle_failed(event, exc)
        log.warning(
            "%s event %s hit a store error (%s); retrying",
            event.channel,
            event.id,
            type(exc).__name__,
        )
        return False

    async def _settle_failed(self, event: InboxEvent, exc: Exception) -> bool:
        try:
            await self.store.mark_processed(event.id, error=f"{type(exc).__name__}: {exc}"[:2000])
        except StoreError:
            return False  # not even that: tried again like any store failure
        self._store_failures.pop(event.id, None)
        self.settled_failed += 1
        return True

    async def _store_answers(self) -> bool:
        try:
            await self.store.ping()
        except StoreError:
            return False
        return True


async def _first_of(stop: asyncio.Event, rung: asyncio.Event, seconds: float) -> None:
    """Until `stop` or `rung` is set, or `seconds` pass."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(rung.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _drop(queue: list[InboxEvent], event: InboxEvent) -> None:
    """Take a settled event off its queue (unless closing took it off already)."""
    if queue and queue[0] is event:
        queue.pop(0)
