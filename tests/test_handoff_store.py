"""The handoff and agent store contract, run against every backend (see `store` in conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bot.errors import (
    AgentExists,
    AlreadyClaimed,
    HandoffClosed,
    NotHolder,
    UnknownAgent,
    UnknownHandoff,
)
from bot.models import Channel, ConversationKey, ConversationState, Mode
from bot.store import (
    AgentStore,
    CannedReplyStore,
    HandoffOutcome,
    HandoffStatus,
    HandoffStore,
    SqlStore,
    TranscriptEntry,
)

T0 = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
KEY = ConversationKey(channel=Channel.LINE, address="U0123456789abcdef")
STATE = ConversationState(flow="career", flow_version="3", state="handoff")


async def waiting(store: SqlStore, key: ConversationKey = KEY) -> int:
    """A conversation the bot just put in waiting mode; returns its id."""
    saved = await store.save_turn(
        key, state=STATE, expected_version=None, inbound=[], outbound=[], mode=Mode.WAITING, now=T0
    )
    return saved.conversation_id


@pytest.fixture
def handoffs(store: SqlStore) -> HandoffStore:
    return HandoffStore(engine=store.engine)


@pytest.fixture
def agents(store: SqlStore) -> AgentStore:
    return AgentStore(engine=store.engine)


async def test_open_is_idempotent_and_records_the_mode_change(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    first, created = await handoffs.open(cid, reason="相談希望", summary={"answers": []}, now=T0)
    again, created_again = await handoffs.open(cid, reason="相談希望", summary={}, now=T0)

    assert created and not created_again
    assert again.id == first.id
    assert first.status is HandoffStatus.WAITING
    assert first.key == KEY and first.summary == {"answers": []} and first.requested_at == T0
    assert [h.id for h in await handoffs.queue()] == [first.id]
    changes = await handoffs.mode_changes(cid)
    assert [(c.from_mode, c.to_mode, c.who, c.why) for c in changes] == [
        (Mode.BOT, Mode.WAITING, "user", "相談希望")
    ]


async def test_concurrent_opens_make_one_handoff(store: SqlStore, handoffs: HandoffStore) -> None:
    cid = await waiting(store)
    results = await asyncio.gather(
        *(handoffs.open(cid, reason="r", summary={}, now=T0) for _ in range(5))
    )
    assert len({h.id for h, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_claim_sets_agent_mode_and_is_exclusive(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    before = await store.load(KEY)

    claimed = await handoffs.claim(handoff.id, agent="hanako", agent_name="花子", now=T0)
    assert claimed.status is HandoffStatus.CLAIMED
    assert (claimed.agent, claimed.agent_name, claimed.claimed_at) == ("hanako", "花子", T0)
    conversation = await store.load(KEY)
    assert conversation is not None and before is not None
    assert (conversation.mode, conversation.agent) == (Mode.AGENT, "hanako")
    assert conversation.version > before.version  # a turn in flight re-runs under agent mode

    # The holder claiming again is a no-op; anyone else learns who holds it.
    assert (await handoffs.claim(handoff.id, agent="hanako", agent_name="花子")).id == handoff.id
    with pytest.raises(AlreadyClaimed) as lost:
        await handoffs.claim(handoff.id, agent="taro", agent_name="太郎")
    assert (lost.value.agent, lost.value.agent_name) == ("hanako", "花子")
    with pytest.raises(UnknownHandoff):
        await handoffs.claim(999_999, agent="taro", agent_name="太郎")


async def test_two_agents_claiming_at_once_one_wins(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    names = [f"agent{i}" for i in range(6)]

    outcomes = await asyncio.gather(
        *(handoffs.claim(handoff.id, agent=n, agent_name=n) for n in names),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, AlreadyClaimed)]
    assert len(winners) == 1 and len(losers) == len(names) - 1
    holder = winners[0].agent
    assert {loser.agent for loser in losers} == {holder}
    changes = await handoffs.mode_changes(cid)
    assert [c.to_mode for c in changes] == [Mode.WAITING, Mode.AGENT]


async def test_only_the_holder_speaks_and_releases(store: SqlStore, handoffs: HandoffStore) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    with pytest.raises(NotHolder):
        await handoffs.add_message(handoff.id, agent="hanako", text="こんにちは", body={})
    await handoffs.claim(handoff.id, agent="hanako", agent_name="花子", now=T0)

    said = await handoffs.add_message(
        handoff.id, agent="hanako", text="こんにちは", body={"type": "text", "text": "こんにちは"}
    )
    note = await handoffs.add_message(
        handoff.id, agent="taro", text="経理経験3年", body={}, note=True
    )
    with pytest.raises(NotHolder):
        await handoffs.add_message(handoff.id, agent="taro", text="横から", body={})
    with pytest.raises(NotHolder):
        await handoffs.release(handoff.id, agent="taro")

    released = await handoffs.release(handoff.id, agent="hanako", now=T0 + timedelta(minutes=5))
    assert released.status is HandoffStatus.RELEASED
    assert released.closed_at == T0 + timedelta(minutes=5)
    with pytest.raises(HandoffClosed):
        await handoffs.release(handoff.id, agent="hanako")
    with pytest.raises(HandoffClosed):
        await handoffs.add_message(handoff.id, agent="hanako", text="まだ", body={})

    transcript = await store.transcript(cid)
    assert [(m.id, m.sender, m.text) for m in transcript] == [
        (said.id, "agent", "こんにちは"),
        (note.id, "note", "経理経験3年"),
    ]
    changes = await handoffs.mode_changes(cid)
    assert [(c.from_mode, c.to_mode, c.who) for c in changes][-1] == (
        Mode.AGENT,
        Mode.BOT,
        "hanako",
    )
    assert await handoffs.open_for(cid) is None


async def test_cancel_only_while_waiting(store: SqlStore, handoffs: HandoffStore) -> None:
    cid = await waiting(store)
    assert await handoffs.cancel(cid) is None  # nothing open yet
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)

    cancelled = await handoffs.cancel(cid, now=T0 + timedelta(minutes=1))
    assert cancelled is not None and cancelled.id == handoff.id
    assert cancelled.status is HandoffStatus.CANCELLED
    assert await handoffs.queue() == []

    second, created = await handoffs.open(cid, reason="again", summary={}, now=T0)
    assert created and second.id != handoff.id
    await handoffs.claim(second.id, agent="hanako", agent_name="花子")
    with pytest.raises(AlreadyClaimed):
        await handoffs.cancel(cid)


async def test_timeout_notice_is_claimed_once(store: SqlStore, handoffs: HandoffStore) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    assert [h.id for h in await handoffs.waiting_unnotified()] == [handoff.id]

    results = await asyncio.gather(*(handoffs.mark_timeout_notified(handoff.id) for _ in range(4)))

    assert sorted(results) == [False, False, False, True]
    assert await handoffs.waiting_unnotified() == []
    assert (await handoffs.get(handoff.id)).timeout_notified_at is not None


async def test_surface_refs_find_the_handoff(store: SqlStore, handoffs: HandoffStore) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    await handoffs.set_ref(handoff.id, surface="slack", ref="1712.0001", data={"channel": "C1"})
    await handoffs.set_ref(handoff.id, surface="slack", ref="1712.0002", data={"channel": "C1"})

    found = await handoffs.by_ref(surface="slack", ref="1712.0002")
    assert found is not None and found.id == handoff.id
    ref = found.ref("slack")
    assert ref is not None and (ref.ref, ref.data) == ("1712.0002", {"channel": "C1"})
    assert await handoffs.by_ref(surface="slack", ref="1712.0001") is None
    assert await handoffs.by_ref(surface="other", ref="1712.0002") is None


async def test_orphans_are_conversations_out_of_bot_mode_without_an_open_handoff(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    later = T0 + timedelta(hours=1)
    lost = await waiting(store, ConversationKey(channel=Channel.WEB, address="lost-open"))
    fine = await waiting(store, ConversationKey(channel=Channel.WEB, address="fine"))
    await handoffs.open(fine, reason="r", summary={}, now=T0)
    cancelled = await waiting(store, ConversationKey(channel=Channel.WEB, address="cancelled"))
    await handoffs.open(cancelled, reason="r", summary={}, now=T0)
    await handoffs.cancel(cancelled, now=T0)

    orphans = {o.conversation_id: o for o in await handoffs.orphans(older_than=later)}

    assert set(orphans) == {lost, cancelled}
    assert orphans[lost].last_status is None and orphans[lost].mode is Mode.WAITING
    assert orphans[cancelled].last_status is HandoffStatus.CANCELLED
    assert orphans[cancelled].last_closed_at == T0
    assert await handoffs.orphans(older_than=T0) == []


async def test_purging_a_conversation_removes_its_handoffs(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={"recent": ["個人的な話"]}, now=T0)
    await handoffs.set_ref(handoff.id, surface="slack", ref="1.2")
    await store.mark_inactive(KEY, now=T0)

    assert await store.purge_inactive(T0 + timedelta(days=1)) == 1

    with pytest.raises(UnknownHandoff):
        await handoffs.get(handoff.id)
    async with store.engine.connect() as connection:
        for table in ("handoffs", "handoff_refs", "mode_changes"):
            count = await connection.execute(sa.text(f"SELECT count(*) FROM {table}"))
            assert count.scalar_one() == 0, table


# ---------------------------------------------------------------- agents


async def test_agent_accounts(agents: AgentStore) -> None:
    added = await agents.add("hanako", password_hash="$argon2id$x", display_name="花子", now=T0)
    assert (added.name, added.display_name, added.disabled) == ("hanako", "花子", False)
    with pytest.raises(AgentExists):
        await agents.add("hanako", password_hash="y", display_name="別人")
    credentials = await agents.credentials("hanako")
    assert credentials is not None and credentials[1] == "$argon2id$x"
    await agents.set_password("hanako", password_hash="$argon2id$z")
    assert (await agents.credentials("hanako") or (None, ""))[1] == "$argon2id$z"
    assert await agents.credentials("nobody") is None
    assert [a.name for a in await agents.all()] == ["hanako"]

    await agents.disable("hanako")
    assert (await agents.get("hanako") or added).disabled
    with pytest.raises(UnknownAgent):
        await agents.disable("nobody")


async def test_tokens_stop_working_when_revoked_or_disabled(agents: AgentStore) -> None:
    await agents.add("hanako", password_hash="h", display_name="花子")
    await agents.add("taro", password_hash="h", display_name="太郎")
    await agents.add_token("hanako", token_hash="a" * 64, label="laptop", now=T0)
    await agents.add_token("taro", token_hash="b" * 64, label="", now=T0)
    with pytest.raises(UnknownAgent):
        await agents.add_token("nobody", token_hash="c" * 64)

    found = await agents.by_token("a" * 64, now=T0 + timedelta(minutes=1))
    assert found is not None and found.name == "hanako"
    assert (await agents.tokens("hanako"))[0].last_used_at == T0 + timedelta(minutes=1)
    assert await agents.by_token("f" * 64) is None

    assert await agents.revoke_tokens("hanako") == 1
    assert await agents.by_token("a" * 64) is None
    await agents.disable("taro")
    assert await agents.by_token("b" * 64) is None


# ---------------------------------------------------------------- outcomes, history, reads


async def _released(
    store: SqlStore,
    handoffs: HandoffStore,
    address: str,
    *,
    agent: str,
    outcome: HandoffOutcome | None,
    at: datetime,
) -> int:
    cid = await waiting(store, ConversationKey(channel=Channel.WEB, address=address))
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=at)
    await handoffs.claim(handoff.id, agent=agent, agent_name=agent.title(), now=at)
    released = await handoffs.release(handoff.id, agent=agent, outcome=outcome, now=at)
    return released.id


async def test_release_keeps_the_outcome_and_says_it_in_the_record(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    await handoffs.claim(handoff.id, agent="hanako", agent_name="花子", now=T0)

    released = await handoffs.release(handoff.id, agent="hanako", outcome=HandoffOutcome.BOOKED)

    assert released.outcome is HandoffOutcome.BOOKED
    assert (await handoffs.get(handoff.id)).outcome is HandoffOutcome.BOOKED
    assert (await handoffs.mode_changes(cid))[-1].why == "対応終了（面談予約済み）"


async def test_history_filters_by_date_agent_and_outcome(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    day = timedelta(days=1)
    booked = await _released(
        store, handoffs, "a", agent="hanako", outcome=HandoffOutcome.BOOKED, at=T0
    )
    follow = await _released(
        store, handoffs, "b", agent="taro", outcome=HandoffOutcome.FOLLOW_UP, at=T0 + day
    )
    silent = await _released(store, handoffs, "c", agent="hanako", outcome=None, at=T0 + 2 * day)
    cid = await waiting(store, ConversationKey(channel=Channel.WEB, address="d"))
    await handoffs.open(cid, reason="r", summary={}, now=T0)
    cancelled = await handoffs.cancel(cid, now=T0 + 3 * day)
    assert cancelled is not None

    assert [h.id for h in await handoffs.history()] == [cancelled.id, silent, follow, booked]
    assert [h.id for h in await handoffs.history(agent="hanako")] == [silent, booked]
    assert [h.id for h in await handoffs.history(outcome=HandoffOutcome.FOLLOW_UP)] == [follow]
    assert [h.id for h in await handoffs.history(outcome="none")] == [cancelled.id, silent]
    assert [h.id for h in await handoffs.history(since=T0 + day, until=T0 + 2 * day)] == [follow]
    assert await handoffs.agents_seen() == [("hanako", "Hanako"), ("taro", "Taro")]


async def test_previews_show_the_last_user_line_unread_per_agent(
    store: SqlStore, handoffs: HandoffStore
) -> None:
    cid = await waiting(store)
    handoff, _ = await handoffs.open(cid, reason="r", summary={}, now=T0)
    assert (await handoffs.previews([handoff.id], agent="hanako"))[handoff.id].unread is False

    await store.save_turn(
        KEY,
        state=STATE,
        expected_version=1,
        inbound=[TranscriptEntry(direction="in", sender="user", text="面接が不安です")],
        outbound=[],
        mode=Mode.WAITING,
        now=T0 + timedelta(minutes=1),
    )
    preview = (await handoffs.previews([handoff.id], agent="hanako"))[handoff.id]
    assert (preview.last_user_text, preview.unread) == ("面接が不安です", True)

    last = (await store.transcript(cid))[-1].id
    await handoffs.mark_read(handoff.id, agent="hanako", message_id=last)
    await handoffs.mark_read(handoff.id, agent="hanako", message_id=last - 1)  # never back
    assert (await handoffs.previews([handoff.id], agent="hanako"))[handoff.id].unread is False
    assert (await handoffs.previews([handoff.id], agent="taro"))[handoff.id].unread is True


# ---------------------------------------------------------------- saved replies


async def test_saved_replies_are_kept_by_keyword_replaced_and_deleted(store: SqlStore) -> None:
    replies = CannedReplyStore(engine=store.engine)
    assert await replies.all() == []

    first = await replies.save("挨拶", "{{name}}です。", by="hanako", now=T0)
    await replies.save("面談", "{{agency}}の面談は無料です。", by="hanako", now=T0)
    again = await replies.save("挨拶", "担当の{{name}}です。", by="taro", now=T0 + timedelta(1))

    assert again.id == first.id and again.body == "担当の{{name}}です。"
    assert (again.updated_by, again.updated_at) == ("taro", T0 + timedelta(1))
    assert [r.name for r in await replies.all()] == sorted(["挨拶", "面談"])
    assert (await replies.get("面談")) is not None and await replies.get("ない") is None
    assert await replies.delete("面談") is True
    assert await replies.delete("面談") is False
    assert [r.name for r in await replies.all()] == ["挨拶"]
