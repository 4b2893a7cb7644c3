"""The worker: a passing store error leaves the event pending and it is processed again; an
event that keeps failing alone is settled as failed; one handled elsewhere is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.core.inbox import SUSPECT_AFTER, Worker
from bot.errors import StoreError
from bot.records import InboxEvent
from bot.store import AlreadyHandled, SqlStore


async def test_a_store_error_is_retried_and_the_event_handled_once(store: SqlStore) -> None:
    worker = Worker(store=store)
    seen: list[int] = []

    async def flaky(event: InboxEvent) -> None:
        seen.append(event.id)
        if len(seen) == 1:
            raise StoreError("database is locked")

    worker.register("line", flaky)
    new = await worker.submit(
        channel="line",
        event_id="e1",
        address="U1",
        payload={},
        occurred_at=datetime(2026, 11, 25, tzinfo=UTC),
    )
    assert new
    await worker.idle(grace=5)
    assert len(seen) == 2 and seen[0] == seen[1]
    assert await store.pending_events() == []
    await worker.close()


async def test_an_event_failing_alone_is_settled_as_failed_not_run_forever(
    store: SqlStore,
) -> None:
    """The database answers, yet this event's turn fails every time: after SUSPECT_AFTER
    tries it is settled with its error kept, and the user's next event runs."""
    worker = Worker(store=store, retry_first=0.001)
    runs: list[str] = []

    async def refuses_the_bad_one(event: InboxEvent) -> None:
        runs.append(event.event_id)
        if event.event_id == "bad":
            raise StoreError("invalid byte sequence for encoding UTF8: 0x00")

    worker.register("line", refuses_the_bad_one)
    for event_id, minute in (("bad", 1), ("next", 2)):
        await worker.submit(
            channel="line",
            event_id=event_id,
            address="U1",
            payload={},
            occurred_at=datetime(2026, 11, 25, 0, minute, tzinfo=UTC),
        )
    await worker.idle(grace=10)
    assert runs == ["bad"] * SUSPECT_AFTER + ["next"]
    assert await store.pending_events() == []
    health = await store.inbox_health()
    assert (health.pending, health.failed) == (0, 1)
    assert worker.settled_failed == 1
    await worker.close()


async def test_an_event_handled_elsewhere_is_skipped_without_error(store: SqlStore) -> None:
    worker = Worker(store=store)
    handled: list[int] = []

    async def someone_else_was_first(event: InboxEvent) -> None:
        assert await store.claim_event(event.id)  # the other worker's commit
        handled.append(event.id)
        raise AlreadyHandled(event.id)

    worker.register("line", someone_else_was_first)
    await worker.submit(
        channel="line",
        event_id="e1",
        address="U1",
        payload={},
        occurred_at=datetime(2026, 11, 25, tzinfo=UTC),
    )
    await worker.idle(grace=5)
    assert len(handled) == 1
    health = await store.inbox_health()
    assert (health.pending, health.failed) == (0, 0)
    await worker.close()
