"""The worker: a passing store error leaves the event pending and it is processed again."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.errors import StoreError
from bot.store import SqlStore
from bot.store.records import InboxEvent
from bot.worker import Worker


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
