"""The booking store on every backend (SQLite and PostgreSQL): availability, contacts with
consent, and one slot, one booking, decided by the database even when users race."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta

import pytest

from bot.errors import SlotTaken, UnknownBooking
from bot.models import Channel, ConversationKey, ConversationState
from bot.records import Rule
from bot.store import AgentStore, BookingStore, SqlStore

T0 = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)
STATE = ConversationState(flow="career", flow_version="1", state="booking")


async def _user(store: SqlStore, address: str) -> int:
    key = ConversationKey(channel=Channel.WEB, address=address)
    saved = await store.save_turn(key, state=STATE, expected_version=None, inbound=[], outbound=[])
    return saved.conversation_id


async def _agent(store: SqlStore, name: str = "sato", display: str = "佐藤") -> int:
    agent = await AgentStore(engine=store.engine).add(name, password_hash="x", display_name=display)
    return agent.id


async def test_rules_are_kept_per_agent_and_removed_by_id(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    weekly = Rule(agent_id=agent_id, kind="weekly", weekday=1, start=time(18), end=time(21))
    off = Rule(agent_id=agent_id, kind="off", day=date(2025, 4, 8))
    first = await bookings.add_rule("sato", weekly)
    await bookings.add_rule("sato", off)
    assert await bookings.rules() == [weekly, off]
    assert await bookings.remove_rule("sato", first)
    assert not await bookings.remove_rule("sato", first)
    assert await bookings.rules("sato") == [off]


async def test_contact_is_replaced_with_its_consent(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    user = await _user(store, "a")
    await bookings.save_contact(
        user, name="花子", method="chat", phone=None, email=None, policy_version="1", now=T0
    )
    later = T0 + timedelta(days=1)
    await bookings.save_contact(
        user,
        name="花子",
        method="email",
        phone=None,
        email="h@example.jp",
        policy_version="2",
        now=later,
    )
    contact = await bookings.contact(user)
    assert contact is not None
    assert (contact.method, contact.email, contact.policy_version) == ("email", "h@example.jp", "2")
    assert contact.consent_at == later


async def test_one_slot_one_booking(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    slot = {"agent_id": agent_id, "starts_at": T0, "ends_at": T0 + timedelta(minutes=30)}
    booked = await bookings.book(alice, **slot, now=T0)
    assert booked.agent_name == "佐藤" and booked.status == "booked" and len(booked.token) >= 22
    with pytest.raises(SlotTaken):
        await bookings.book(bob, **slot, now=T0)
    # The same user asking again (a retried turn) gets the booking they hold.
    assert (await bookings.book(alice, **slot, now=T0)).id == booked.id
    # Cancelled, the slot is free again.
    await bookings.cancel(booked.id, now=T0)
    with pytest.raises(UnknownBooking):
        await bookings.cancel(booked.id, now=T0)
    assert (await bookings.book(bob, **slot, now=T0)).conversation_id == bob


async def test_two_users_racing_for_a_slot_never_both_get_it(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    users = [await _user(store, f"user{i}") for i in range(6)]
    slot = {"agent_id": agent_id, "starts_at": T0, "ends_at": T0 + timedelta(minutes=30)}
    outcomes = await asyncio.gather(
        *(bookings.book(user, **slot, now=T0) for user in users), return_exceptions=True
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1
    assert all(isinstance(o, SlotTaken) for o in lost), lost
    assert await bookings.taken(T0, T0 + timedelta(hours=1)) == [(agent_id, T0)]


async def test_a_reschedule_moves_the_booking_in_one_transaction(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    alice, bob = await _user(store, "alice"), await _user(store, "bob")
    half = timedelta(minutes=30)
    first = await bookings.book(alice, agent_id=agent_id, starts_at=T0, ends_at=T0 + half, now=T0)
    taken = T0 + timedelta(hours=1)
    await bookings.book(bob, agent_id=agent_id, starts_at=taken, ends_at=taken + half, now=T0)
    # Moving to a taken slot fails and keeps the old booking.
    with pytest.raises(SlotTaken):
        await bookings.book(
            alice, agent_id=agent_id, starts_at=taken, ends_at=taken + half, replaces=first.id
        )
    assert (await bookings.open_booking(alice)) == first
    later = T0 + timedelta(hours=2)
    moved = await bookings.book(
        alice, agent_id=agent_id, starts_at=later, ends_at=later + half, replaces=first.id, now=T0
    )
    assert (await bookings.open_booking(alice)) == moved
    assert (await bookings.get(first.id)).status == "cancelled"
    listed = await bookings.between(T0, T0 + timedelta(days=1), agent="sato")
    assert [(b.starts_at, b.status) for b in listed] == [
        (T0, "cancelled"),
        (taken, "booked"),
        (later, "booked"),
    ]


async def test_forgetting_a_user_deletes_contact_and_bookings(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    user = await _user(store, "alice")
    key = ConversationKey(channel=Channel.WEB, address="alice")
    await bookings.save_contact(
        user, name="花子", method="phone", phone="090-1234-5678", email=None, policy_version="1"
    )
    booked = await bookings.book(
        user, agent_id=agent_id, starts_at=T0, ends_at=T0 + timedelta(minutes=30), now=T0
    )
    export = await store.export_user(key, who="test")
    assert export["conversation"]["contact"][0]["phone"] == "090-1234-5678"
    assert export["conversation"]["bookings"][0]["id"] == booked.id
    assert "token" not in export["conversation"]["bookings"][0]
    await store.forget_user(key, who="test")
    assert await bookings.contact(user) is None
    with pytest.raises(UnknownBooking):
        await bookings.get(booked.id)


async def test_the_retention_purge_deletes_contact_and_bookings_with_the_conversation(
    store: SqlStore,
) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    user = await _user(store, "idle-web-chat")
    await bookings.save_contact(
        user, name="花子", method="email", phone=None, email="h@example.jp", policy_version="1"
    )
    booked = await bookings.book(
        user, agent_id=agent_id, starts_at=T0, ends_at=T0 + timedelta(minutes=30), now=T0
    )
    assert await store.purge_inactive(datetime.now(UTC) + timedelta(days=1)) == 1
    assert await bookings.contact(user) is None
    with pytest.raises(UnknownBooking):
        await bookings.get(booked.id)


async def test_a_past_booking_is_done_when_the_user_books_again(store: SqlStore) -> None:
    bookings = BookingStore(engine=store.engine)
    agent_id = await _agent(store)
    user = await _user(store, "alice")
    half = timedelta(minutes=30)
    first = await bookings.book(user, agent_id=agent_id, starts_at=T0, ends_at=T0 + half, now=T0)
    later = T0 + timedelta(days=7)
    second = await bookings.book(
        user, agent_id=agent_id, starts_at=later, ends_at=later + half, now=T0 + timedelta(days=1)
    )
    assert (await bookings.get(first.id)).status == "done"
    assert await bookings.open_booking(user) == second
