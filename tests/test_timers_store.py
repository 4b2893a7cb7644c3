"""Durable timers in the store, on SQLite and PostgreSQL: scheduled by key (once per key),
cancelled by key or prefix, found when due, settled once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.models import Channel, ConversationKey, ConversationState
from bot.store import SqlStore

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


async def conversation(store: SqlStore, address: str = "U1") -> int:
    key = ConversationKey(channel=Channel.LINE, address=address)
    saved = await store.save_turn(
        key,
        state=ConversationState(flow="career", flow_version="1", state="greeting"),
        expected_version=None,
        inbound=[],
        outbound=[],
    )
    return saved.conversation_id


async def test_scheduling_a_key_again_replaces_its_due_time(store: SqlStore) -> None:
    cid = await conversation(store)
    first = await store.schedule_timer(
        "followup:1", kind="say", conversation_id=cid, due_at=T0, payload={"n": 1}
    )
    again = await store.schedule_timer(
        "followup:1",
        kind="say",
        conversation_id=cid,
        due_at=T0 + timedelta(hours=1),
        payload={"n": 2},
    )
    assert again.id == first.id
    [timer] = await store.timers_of(cid)
    assert timer.due_at == T0 + timedelta(hours=1) and timer.payload == {"n": 2}
    assert await store.due_timers(T0 + timedelta(minutes=59)) == []
    assert [t.key for t in await store.due_timers(T0 + timedelta(hours=1))] == ["followup:1"]


async def test_due_timers_come_earliest_first_and_only_pending_ones(store: SqlStore) -> None:
    cid = await conversation(store)
    for minutes, key in ((30, "b"), (10, "a"), (50, "c"), (20, "gone")):
        await store.schedule_timer(
            key, kind="say", conversation_id=cid, due_at=T0 + timedelta(minutes=minutes)
        )
    assert await store.cancel_timer("gone") is True
    assert await store.cancel_timer("gone") is False  # once
    assert await store.cancel_timer("never") is False
    due = await store.due_timers(T0 + timedelta(minutes=40))
    assert [t.key for t in due] == ["a", "b"]
    assert await store.next_due() == T0 + timedelta(minutes=10)
    assert await store.settle_timer(due[0], "sent") is True
    assert [t.key for t in await store.due_timers(T0 + timedelta(hours=1))] == ["b", "c"]


async def test_cancel_by_prefix_takes_only_that_prefix(store: SqlStore) -> None:
    cid = await conversation(store)
    keys = ["booking:1_%:day", "booking:1_%:hour", "booking:12:day", "booking:1x:day"]
    for key in keys:
        await store.schedule_timer(key, kind="say", conversation_id=cid, due_at=T0)
    # LIKE's wildcards in the prefix are literal characters.
    assert await store.cancel_timers("booking:1_%:") == 2
    assert [t.key for t in await store.due_timers(T0)] == ["booking:12:day", "booking:1x:day"]
    with pytest.raises(ValueError, match="prefix"):
        await store.cancel_timers("")


async def test_a_timer_is_settled_once_and_not_after_a_reschedule(store: SqlStore) -> None:
    cid = await conversation(store)
    await store.schedule_timer("k", kind="say", conversation_id=cid, due_at=T0)
    [found] = await store.due_timers(T0)
    assert await store.settle_timer(found, "sent") is True
    assert await store.settle_timer(found, "sent") is False
    fired = await store.timer("k")
    assert fired is not None and fired.fired_at is not None and fired.outcome == "sent"

    # Armed anew by the same key, then moved while a runner held the old copy: the old copy
    # settles nothing, the new due time stands.
    await store.schedule_timer("k", kind="say", conversation_id=cid, due_at=T0 + timedelta(days=1))
    [armed] = await store.due_timers(T0 + timedelta(days=1))
    assert armed.pending and armed.outcome is None
    await store.schedule_timer("k", kind="say", conversation_id=cid, due_at=T0 + timedelta(days=2))
    assert await store.settle_timer(armed, "sent") is False
    assert await store.postpone_timer(armed, T0) is False
    assert [t.key for t in await store.due_timers(T0 + timedelta(days=2))] == ["k"]


async def test_a_failed_try_moves_the_timer_and_giving_up_settles_it(store: SqlStore) -> None:
    cid = await conversation(store)
    timer = await store.schedule_timer("k", kind="say", conversation_id=cid, due_at=T0)
    await store.timer_failed(timer, "LineApiError: 500", retry_at=T0 + timedelta(minutes=1))
    moved = await store.timer("k")
    assert moved is not None and moved.attempts == 1 and moved.last_error == "LineApiError: 500"
    assert moved.due_at == T0 + timedelta(minutes=1) and moved.pending
    await store.timer_failed(moved, "again", retry_at=None)
    given_up = await store.timer("k")
    assert given_up is not None and given_up.outcome == "failed" and not given_up.pending


async def test_timers_go_with_their_conversation(store: SqlStore) -> None:
    cid = await conversation(store)
    await store.schedule_timer("k", kind="say", conversation_id=cid, due_at=T0)
    await store.forget_user(ConversationKey(channel=Channel.LINE, address="U1"), who="user")
    assert await store.timer("k") is None
