"""The store contract, run against every backend (see `store` in conftest.py)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from bot.core.leases import LeaseKeeper
from bot.errors import StoreError
from bot.models import Channel, ConversationKey, ConversationState, Mode, Status
from bot.store import (
    AlreadyHandled,
    ConcurrentUpdate,
    NewEvent,
    SavedTurn,
    SqlStore,
    TranscriptEntry,
    TurnWrite,
    UnknownConversation,
    create_engine,
    database_url,
    migrate,
)
from bot.store.db import ALEMBIC_INI
from bot.store.schema import inbox, metadata

if TYPE_CHECKING:
    from conftest import StoreTarget

ROOT = Path(__file__).resolve().parents[1]
JST = timezone(timedelta(hours=9))
T0 = datetime(2025, 4, 1, 9, 0, tzinfo=JST)
KEY = ConversationKey(channel=Channel.LINE, address="U0123456789abcdef")
STATE = ConversationState(flow="career", flow_version="3", state="ask_job")


def vars_of(event: NewEvent) -> dict[str, Any]:
    return {f: getattr(event, f) for f in ("event_id", "address", "payload", "occurred_at")}


def said(text: str, **body: Any) -> TranscriptEntry:
    return TranscriptEntry(direction="in", sender="user", text=text, body=body)


def replied(text: str, **body: Any) -> TranscriptEntry:
    return TranscriptEntry(direction="out", sender="bot", text=text, body=body)


async def start(
    store: SqlStore, key: ConversationKey = KEY, state: ConversationState = STATE, **kw: Any
) -> int:
    """Create a conversation; returns its id."""
    kw.setdefault("inbound", [])
    kw.setdefault("outbound", [])
    saved = await store.save_turn(key, state=state, expected_version=None, **kw)
    return saved.conversation_id


# ---------------------------------------------------------------- URLs and engines


@pytest.mark.parametrize(
    ("plain", "async_url"),
    [
        ("sqlite:///data/yarigai.db", "sqlite+aiosqlite:///data/yarigai.db"),
        ("sqlite:////var/lib/yarigai.db", "sqlite+aiosqlite:////var/lib/yarigai.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://bot@db:5432/yarigai", "postgresql+asyncpg://bot@db:5432/yarigai"),
        ("postgres://bot:pw@db/yarigai", "postgresql+asyncpg://bot:pw@db/yarigai"),
        ("sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///a.db"),
        ("postgresql+asyncpg://bot@db/yarigai", "postgresql+asyncpg://bot@db/yarigai"),
    ],
)
def test_database_url_names_the_async_driver(plain: str, async_url: str) -> None:
    assert database_url(plain) == async_url


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bot:secret@db/yarigai",
        "postgresql+psycopg2://bot:secret@db/y",
        "secret",
        "",
        "x://",
    ],
)
def test_database_url_refuses_other_schemes_without_leaking_the_password(url: str) -> None:
    with pytest.raises(StoreError) as raised:
        database_url(url)
    assert "secret" not in str(raised.value)


async def test_sqlite_engine_makes_its_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        await migrate(engine)  # switches the file to WAL
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert path.exists()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}


async def test_ping_raises_store_error_when_unreachable() -> None:
    store = SqlStore(engine=create_engine("postgresql://nobody@127.0.0.1:1/nothing"))
    try:
        with pytest.raises(StoreError):
            await store.ping()
    finally:
        await store.close()


# ---------------------------------------------------------------- migrations


async def test_migrate_is_idempotent(store: SqlStore) -> None:
    await migrate(store.engine)
    await migrate(store.engine)
    await store.ping()
    async with store.engine.connect() as connection:
        version = (
            await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        ).all()
    # The newest revision, whichever it is: new migrations must not need this test edited.
    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert [tuple(row) for row in version] == [(head,)]


OPEN_STORE = """
import asyncio, sys
from bot.store import SqlStore

async def main(url: str, schema: str | None) -> None:
    store = await SqlStore.open(url, schema=schema)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2] or None))
"""


async def test_processes_starting_together_migrate_once(store_target: StoreTarget) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_STORE,
            store_target.url,
            store_target.schema or "",
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outcomes = [(await p.wait(), (await p.communicate())[1].decode()) for p in processes]

    assert [code for code, _ in outcomes] == [0] * 4, "\n".join(err for _, err in outcomes)
    store = await store_target.open()
    try:
        assert await store.load(KEY) is None
    finally:
        await store.close()


async def test_migrations_in_one_process_take_turns(store_target: StoreTarget) -> None:
    engines = [create_engine(store_target.url, schema=store_target.schema) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()


async def test_migrations_match_tables_module(store: SqlStore) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


# ---------------------------------------------------------------- conversations


async def test_save_and_load_round_trip(store: SqlStore) -> None:
    state = ConversationState(
        flow="career",
        flow_version="3",
        state="ask_values",
        slots={"名前": "山田 花子", "職種": ["経理", "総務"], "年数": 7, "詳細": {"残業": None}},
        selection=("やりがい", "成長"),
        misses=2,
        pending_confirm=("転職したい",),
    )
    saved = await store.save_turn(
        KEY, state=state, expected_version=None, inbound=[], outbound=[], now=T0
    )
    loaded = await store.load(KEY)

    assert loaded is not None
    assert (loaded.id, loaded.key, loaded.state) == (saved.conversation_id, KEY, state)
    assert (loaded.mode, loaded.agent, loaded.version) == (Mode.BOT, None, 1)
    assert loaded.updated_at == T0
    assert loaded.updated_at.tzinfo is UTC
    assert saved.version == 1 and saved.outbox_id is None


async def test_load_unknown_is_none(store: SqlStore) -> None:
    assert await store.load(KEY) is None


async def test_stale_version_is_refused_and_writes_nothing(store: SqlStore) -> None:
    conversation_id = await start(store)
    with pytest.raises(ConcurrentUpdate):  # creating twice
        await start(store)
    moved = STATE.model_copy(update={"state": "ask_years"})
    second = await store.save_turn(
        KEY, state=moved, expected_version=1, inbound=[said("経理")], outbound=[]
    )
    assert second.version == 2

    with pytest.raises(ConcurrentUpdate) as raised:
        await store.save_turn(
            KEY,
            state=STATE,
            expected_version=1,
            inbound=[said("lost")],
            outbound=[replied("lost")],
            deliver=[{"type": "text", "text": "lost"}],
        )

    assert raised.value.expected_version == 1 and raised.value.key == KEY
    loaded = await store.load(KEY)
    assert loaded is not None and (loaded.state, loaded.version) == (moved, 2)
    assert [m.text for m in await store.transcript(conversation_id)] == ["経理"]
    assert await store.outbox_pending() == []


async def test_a_batch_of_turns_saves_all_or_tells_each_to_retry(store: SqlStore) -> None:
    keys = [ConversationKey(channel=Channel.LINE, address=f"U{n:032x}") for n in range(4)]
    ids = [await start(store, key) for key in keys[:3]]
    moved = STATE.model_copy(update={"state": "ask_years"})

    def turn(index: int, version: int | None) -> TurnWrite:
        return TurnWrite(
            key=keys[index],
            state=moved,
            expected_version=version,
            conversation_id=ids[index] if version is not None and index < 3 else None,
            inbound=[said(f"m{index}")],
            deliver=[{"type": "text", "text": f"r{index}"}],
        )

    first = await store.save_turns([turn(0, 1), turn(1, 1), turn(3, None)])
    assert [type(s).__name__ for s in first] == ["SavedTurn"] * 3
    assert [s.version for s in first if isinstance(s, SavedTurn)] == [2, 2, 1]
    assert len({s.outbox_id for s in first if isinstance(s, SavedTurn)}) == 3

    # Conversation 0 is at version 2 now: its stale turn loses. The others either win or, where
    # the batch cannot tell who lost (SQLite), are told to retry; nothing of a loser is written.
    second = await store.save_turns([turn(2, 1), turn(0, 1), turn(1, 2)])
    assert isinstance(second[1], ConcurrentUpdate) and second[1].key == keys[0]
    for index, (key, saved) in enumerate(zip([keys[2], keys[0], keys[1]], second, strict=True)):
        loaded = await store.load(key)
        assert loaded is not None
        expected = (saved.version, "ask_years") if isinstance(saved, SavedTurn) else None
        if expected is None:
            assert loaded.version == (1 if key == keys[2] else 2), index
        else:
            assert (loaded.version, loaded.state.state) == expected
    lines = [m.text for m in await store.transcript(ids[0])]
    assert lines == ["m0"]  # the lost turn left no line


async def test_concurrent_turns_one_wins(store: SqlStore) -> None:
    await start(store)
    outcomes = await asyncio.gather(
        *(
            store.save_turn(KEY, state=STATE, expected_version=1, inbound=[], outbound=[])
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, ConcurrentUpdate) for o in outcomes if isinstance(o, BaseException))


async def test_modes_and_agents(store: SqlStore) -> None:
    await start(store)
    await store.set_mode(KEY, Mode.AGENT, "sato")
    loaded = await store.load(KEY)
    assert loaded is not None and (loaded.mode, loaded.agent, loaded.version) == (
        Mode.AGENT,
        "sato",
        2,
    )
    with pytest.raises(ConcurrentUpdate):  # a bot turn begun before the takeover
        await store.save_turn(KEY, state=STATE, expected_version=1, inbound=[], outbound=[])

    await store.save_turn(
        KEY, state=STATE, expected_version=2, inbound=[], outbound=[], mode=Mode.BOT
    )
    loaded = await store.load(KEY)
    assert loaded is not None and (loaded.mode, loaded.agent) == (Mode.BOT, None)

    other = ConversationKey(channel=Channel.SLACK, address="T1/U1")
    with pytest.raises(UnknownConversation):
        await store.set_mode(other, Mode.WAITING)


async def test_counts(store: SqlStore) -> None:
    assert await store.counts_by_state() == {}
    for n, state in enumerate(["ask_job", "ask_job", "result"]):
        key = ConversationKey(channel=Channel.WEB, address=f"visitor-{n}")
        await start(store, key, STATE.model_copy(update={"state": state}))
    await store.set_mode(ConversationKey(channel=Channel.WEB, address="visitor-0"), Mode.WAITING)

    assert await store.counts_by_state() == {"ask_job": 2, "result": 1}
    assert await store.counts_by_mode() == {"bot": 2, "waiting": 1}


# ---------------------------------------------------------------- transcript


async def test_transcript_is_oldest_first_and_limited_to_the_newest(store: SqlStore) -> None:
    conversation_id = await start(
        store, inbound=[said("はじめまして")], outbound=[replied("ようこそ")]
    )
    await store.save_turn(
        KEY,
        state=STATE,
        expected_version=1,
        inbound=[said("経理", choice="accounting")],
        outbound=[
            replied("何年目ですか？", type="choices"),
            TranscriptEntry(direction="out", sender="agent", text="担当の佐藤です"),
        ],
    )

    full = await store.transcript(conversation_id)
    newest = await store.transcript(conversation_id, limit=2)

    assert [(m.direction, m.sender, m.text) for m in full] == [
        ("in", "user", "はじめまして"),
        ("out", "bot", "ようこそ"),
        ("in", "user", "経理"),
        ("out", "bot", "何年目ですか？"),
        ("out", "agent", "担当の佐藤です"),
    ]
    assert full[2].body == {"choice": "accounting"}
    assert all(m.created_at.tzinfo is UTC for m in full)
    assert newest == full[-2:]


# ---------------------------------------------------------------- inbox


async def test_record_event_is_deduplicated(store: SqlStore) -> None:
    event = {
        "event_id": "01HX",
        "address": "U1",
        "payload": {"text": "こんにちは"},
        "occurred_at": T0,
    }
    assert await store.record_event(channel=Channel.LINE, **event) is True
    assert await store.record_event(channel=Channel.LINE, **event) is False
    assert await store.record_event(channel="slack", **event) is True  # ids are per channel


async def test_record_event_is_race_safe(store: SqlStore) -> None:
    results = await asyncio.gather(
        *(
            store.record_event(
                channel=Channel.LINE, event_id="dup", address="U1", payload={}, occurred_at=T0
            )
            for _ in range(10)
        )
    )
    assert sorted(results) == [False] * 9 + [True]
    assert len(await store.pending_events()) == 1


def new_event(event_id: str, address: str = "U1", minutes: int = 0) -> NewEvent:
    return NewEvent(
        channel=Channel.LINE,
        event_id=event_id,
        address=address,
        payload={"text": f"こんにちは {event_id}"},
        occurred_at=T0 + timedelta(minutes=minutes),
    )


async def test_record_events_answers_each_in_order(store: SqlStore) -> None:
    assert await store.record_event(channel=Channel.LINE, **vars_of(new_event("seen"))) is True
    events = [new_event("b", "U2", 1), new_event("seen"), new_event("a"), new_event("b", "U2", 1)]
    recorded = await store.record_events(events)
    # Seen before, or earlier in the same batch: None.
    assert [r and (r.event_id, r.address) for r in recorded] == [
        ("b", "U2"),
        None,
        ("a", "U1"),
        None,
    ]
    b = recorded[0]
    assert b is not None
    assert (b.payload, b.occurred_at, b.processed_at, b.attempts) == (
        {"text": "こんにちは b"},
        T0 + timedelta(minutes=1),
        None,
        0,
    )
    pending = await store.pending_events()
    assert [(e.id, e.event_id) for e in pending] == [
        (pending[0].id, "seen"),
        (recorded[2] and recorded[2].id, "a"),
        (b.id, "b"),
    ]
    assert await store.record_events([]) == []


async def test_record_events_is_race_safe(store: SqlStore) -> None:
    batches = [[new_event(f"e{i}") for i in range(k, k + 20)] for k in range(0, 50, 10)]
    results = await asyncio.gather(*(store.record_events(batch) for batch in batches))
    won = [r.event_id for batch in results for r in batch if r is not None]
    assert sorted(won) == sorted(f"e{i}" for i in range(60))  # each exactly once
    assert len(await store.pending_events()) == 60


async def test_pending_events_in_order_of_occurrence(store: SqlStore) -> None:
    for event_id, minutes in [("c", 2), ("a", 0), ("b1", 1), ("b2", 1)]:
        await store.record_event(
            channel=Channel.LINE,
            event_id=event_id,
            address="U1",
            payload={"n": event_id},
            occurred_at=T0 + timedelta(minutes=minutes),
        )

    pending = await store.pending_events()
    assert [e.event_id for e in pending] == ["a", "b1", "b2", "c"]
    assert pending[0].payload == {"n": "a"} and pending[0].occurred_at == T0
    assert pending[0].key == ConversationKey(channel=Channel.LINE, address="U1")
    assert [e.event_id for e in await store.pending_events(limit=2)] == ["a", "b1"]
    assert pending[0].processed_at is None and pending[0].attempts == 0

    await store.mark_processed(pending[0].id)
    await store.mark_processed(pending[1].id, error="FlowError: boom")
    assert [e.event_id for e in await store.pending_events()] == ["b2", "c"]


async def test_pending_events_of_one_address(store: SqlStore) -> None:
    for n, (channel, address) in enumerate(
        [(Channel.LINE, "U1"), (Channel.LINE, "U2"), (Channel.SLACK, "U1"), (Channel.LINE, "U1")]
    ):
        await store.record_event(
            channel=channel,
            event_id=f"e{n}",
            address=address,
            payload={},
            occurred_at=T0 + timedelta(seconds=n),
        )

    mine = await store.pending_events(channel="line", address="U1")
    assert [e.event_id for e in mine] == ["e0", "e3"]
    assert [e.event_id for e in await store.pending_events(channel=Channel.SLACK)] == ["e2"]
    # Of any channel, after an id, and no longer once run.
    anywhere = await store.pending_events(address="U1")
    assert [e.event_id for e in anywhere] == ["e0", "e2", "e3"]
    later = await store.pending_events(address="U1", after_id=anywhere[0].id)
    assert [e.event_id for e in later] == ["e2", "e3"]
    await store.mark_processed(mine[1].id)
    assert [e.event_id for e in await store.pending_events(channel="line", address="U1")] == ["e0"]


async def test_naive_times_are_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError):
        await store.record_event(
            channel=Channel.LINE,
            event_id="naive",
            address="U1",
            payload={},
            occurred_at=datetime(2025, 4, 1, 9, 0),  # naive on purpose
        )


# ---------------------------------------------------------------- outbox


async def test_outbox_lifecycle(store: SqlStore) -> None:
    messages = [{"type": "text", "text": "ようこそ"}, {"type": "choices", "text": "職種は？"}]
    first = await store.save_turn(
        KEY, state=STATE, expected_version=None, inbound=[], outbound=[], deliver=messages, now=T0
    )
    second = await store.save_turn(
        KEY, state=STATE, expected_version=1, inbound=[], outbound=[], deliver=[{"type": "text"}]
    )
    assert first.outbox_id is not None and second.outbox_id is not None

    [item, _] = await store.outbox_pending()
    assert (item.id, item.conversation_id, item.key) == (
        first.outbox_id,
        first.conversation_id,
        KEY,
    )
    assert (item.payload, item.status, item.attempts, item.created_at) == (
        messages,
        "pending",
        0,
        T0,
    )

    await store.bump_attempt(first.outbox_id, "429 Too Many Requests")
    [item, _] = await store.outbox_pending()
    assert (item.attempts, item.last_error) == (1, "429 Too Many Requests")

    await store.mark_sent(first.outbox_id)
    await store.mark_failed(second.outbox_id, "400 Bad Request")
    assert await store.outbox_pending() == []


# ---------------------------------------------------------------- retention


async def test_purge_removes_inactive_conversations_only(store: SqlStore) -> None:
    old, recent, active = (
        ConversationKey(channel=Channel.LINE, address=a) for a in ("U-old", "U-recent", "U-active")
    )
    old_id = await start(
        store, old, inbound=[said("個人情報")], outbound=[], deliver=[{"text": "x"}]
    )
    await start(store, recent)
    await start(store, active)
    await store.mark_inactive(old, now=T0)
    await store.mark_inactive(recent, now=T0 + timedelta(days=40))
    await store.mark_inactive(ConversationKey(channel=Channel.LINE, address="never-met"))
    for key in (old, active):
        await store.record_event(
            channel=Channel.LINE,
            event_id=f"e-{key.address}",
            address=key.address,
            payload={"text": "個人情報"},
            occurred_at=T0,
        )
    for event in await store.pending_events():
        await store.mark_processed(event.id)

    inactive = await store.load(recent)
    assert inactive is not None and inactive.state.status is Status.INACTIVE

    assert await store.purge_inactive(T0 + timedelta(days=30)) == 1

    assert await store.load(old) is None
    assert await store.load(recent) is not None and await store.load(active) is not None
    assert await store.transcript(old_id) == []
    assert await store.outbox_pending() == []
    async with store.engine.connect() as connection:
        rows = (
            await connection.execute(
                sa.select(inbox.c.event_id, inbox.c.address, inbox.c.payload).order_by(
                    inbox.c.event_id
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("e-U-active", "U-active", {"text": "個人情報"}),
        ("e-U-old", "", None),
    ]
    # The blanked event is still known, so a late redelivery is not processed again.
    assert not await store.record_event(
        channel=Channel.LINE, event_id="e-U-old", address="U-old", payload={}, occurred_at=T0
    )


async def test_a_turn_marks_its_inbound_event_processed_atomically(store: SqlStore) -> None:
    await store.record_event(
        channel=Channel.LINE, event_id="e1", address=KEY.address, payload={}, occurred_at=T0
    )
    (event,) = await store.pending_events()
    state = ConversationState(flow="career", flow_version="1", state="ask_role")
    await store.save_turn(
        KEY, state=state, expected_version=None, inbound=[], outbound=[], inbox_id=event.id
    )
    assert await store.pending_events() == []

    await store.record_event(
        channel=Channel.LINE, event_id="e2", address=KEY.address, payload={}, occurred_at=T0
    )
    (second,) = await store.pending_events()
    with pytest.raises(ConcurrentUpdate):  # a lost race writes nothing, the event stays pending
        await store.save_turn(
            KEY, state=state, expected_version=None, inbound=[], outbound=[], inbox_id=second.id
        )
    assert [e.event_id for e in await store.pending_events()] == ["e2"]


async def test_an_event_commits_its_effects_once_whoever_runs_it(store: SqlStore) -> None:
    """Two workers given the same event by mistake: the second writes nothing."""
    await store.record_event(
        channel=Channel.LINE, event_id="e1", address=KEY.address, payload={}, occurred_at=T0
    )
    (event,) = await store.pending_events()
    conversation_id = await start(store)

    def turn(text: str) -> TurnWrite:
        return TurnWrite(
            key=KEY,
            state=STATE,
            expected_version=1,
            conversation_id=conversation_id,
            inbound=[said(text)],
            deliver=[{"type": "text", "text": text}],
            inbox_id=event.id,
        )

    first, second = await asyncio.gather(
        store.save_turns([turn("first")]), store.save_turns([turn("second")])
    )
    outcomes = [*first, *second]
    assert sum(isinstance(o, SavedTurn) for o in outcomes) == 1
    assert sum(isinstance(o, AlreadyHandled | ConcurrentUpdate) for o in outcomes) == 1
    assert len(await store.transcript(conversation_id)) == 1
    assert len(await store.outbox_pending()) == 1
    # Run again later (a re-run after a crash): the event is marked, nothing more is written.
    with pytest.raises(AlreadyHandled):
        await store.save_turn(
            KEY,
            state=STATE,
            expected_version=2,
            inbound=[said("again")],
            outbound=[],
            inbox_id=event.id,
        )
    assert len(await store.transcript(conversation_id)) == 1
    assert await store.pending_event(event.id) is None


async def test_an_already_handled_turn_leaves_its_batch_mates_saved(store: SqlStore) -> None:
    other = ConversationKey(channel=Channel.LINE, address="U" + "f" * 32)
    for event_id, key in (("e1", KEY), ("e2", other)):
        await store.record_event(
            channel=Channel.LINE, event_id=event_id, address=key.address, payload={}, occurred_at=T0
        )
    first, second = await store.pending_events()
    assert await store.claim_event(first.id)
    assert not await store.claim_event(first.id)  # claimed once only
    outcomes = await store.save_turns(
        [
            TurnWrite(key=KEY, state=STATE, expected_version=None, inbox_id=first.id),
            TurnWrite(key=other, state=STATE, expected_version=None, inbox_id=second.id),
        ]
    )
    assert isinstance(outcomes[0], AlreadyHandled) and outcomes[0].inbox_id == first.id
    assert isinstance(outcomes[1], SavedTurn)
    assert await store.load(KEY) is None and await store.load(other) is not None


async def test_inbox_health_reports_pending_age_and_failures(store: SqlStore) -> None:
    healthy = await store.inbox_health()
    assert (healthy.pending, healthy.oldest_received, healthy.failed) == (0, None, 0)
    for event_id in ("e1", "e2", "e3"):
        await store.record_event(
            channel=Channel.LINE, event_id=event_id, address=KEY.address, payload={}, occurred_at=T0
        )
    first, second, _ = await store.pending_events()
    await store.mark_processed(first.id)
    await store.mark_processed(second.id, error="StoreError: value too long")
    health = await store.inbox_health()
    assert (health.pending, health.failed) == (1, 1)
    assert health.oldest_received is not None
    assert datetime.now(UTC) - health.oldest_received < timedelta(minutes=1)


async def test_pending_items_of_some_conversations_in_pages(store: SqlStore) -> None:
    other = ConversationKey(channel=Channel.LINE, address="U" + "f" * 32)
    ids: list[SavedTurn] = []
    for key in (KEY, other, KEY):
        loaded = await store.load(key)
        (saved,) = await store.save_turns(
            [
                TurnWrite(
                    key=key,
                    state=STATE,
                    expected_version=None if loaded is None else loaded.version,
                    conversation_id=None if loaded is None else loaded.id,
                    deliver=[{"type": "text", "text": "x"}],
                    reply_token="token-" + key.address[-4:],
                    event_at=T0,
                )
            ]
        )
        assert isinstance(saved, SavedTurn)
        ids.append(saved)
    mine = await store.outbox_pending(conversation_ids=[ids[0].conversation_id])
    assert [item.id for item in mine] == [ids[0].outbox_id, ids[2].outbox_id]
    assert (mine[0].reply_token, mine[0].event_at) == ("token-cdef", T0)
    later = await store.outbox_pending(after_id=ids[0].outbox_id or 0, limit=1)
    assert [item.id for item in later] == [ids[1].outbox_id]


async def test_many_outbox_items_are_marked_sent_at_once(store: SqlStore) -> None:
    first = await store.save_turn(
        KEY, state=STATE, expected_version=None, inbound=[], outbound=[], deliver=[{"type": "text"}]
    )
    second = await store.save_turn(
        KEY, state=STATE, expected_version=1, inbound=[], outbound=[], deliver=[{"type": "text"}]
    )
    third = await store.save_turn(
        KEY, state=STATE, expected_version=2, inbound=[], outbound=[], deliver=[{"type": "text"}]
    )
    assert first.outbox_id and second.outbox_id and third.outbox_id
    await store.mark_sent_many([first.outbox_id, second.outbox_id, first.outbox_id])
    assert [item.id for item in await store.outbox_pending()] == [third.outbox_id]


# ---------------------------------------------------------------- leases


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(store: SqlStore) -> None:
    names = ["conversation:line:U1", "conversation:line:U2"]
    assert await store.take(names, holder="a", ttl=10, now=T0) == set(names)
    # Another process gets none of them while they are alive; the holder keeps (renews) them.
    assert await store.take(names, holder="b", ttl=10, now=T0 + timedelta(seconds=5)) == set()
    assert await store.take(names[:1], holder="a", ttl=10, now=T0 + timedelta(seconds=5)) == {
        names[0]
    }
    # U2 was not renewed: it expires at T0+10 s and passes to whoever asks next.
    later = T0 + timedelta(seconds=12)
    assert await store.take(names, holder="b", ttl=10, now=later) == {names[1]}
    assert await store.holders(names, now=later) == {names[0]: "a", names[1]: "b"}
    await store.release(names, holder="b")  # only b's go
    assert await store.holders(names, now=later) == {names[0]: "a"}


async def test_racing_takers_never_share_a_lease(store: SqlStore) -> None:
    name = ["job:purge"]
    won = await asyncio.gather(*(store.take(name, holder=f"p{n}", ttl=10) for n in range(8)))
    assert sum(bool(w) for w in won) == 1


async def test_a_lease_no_longer_used_is_kept_a_moment_then_given_back_with_others(
    store: SqlStore,
) -> None:
    first = LeaseKeeper(store=store, linger=0.3)
    other = LeaseKeeper(store=store, linger=0.3)
    names = ["conversation:line:U1", "conversation:line:U2", "conversation:line:U3"]
    assert await first.acquire(names) == set(names)
    await first.release(names[:2])
    # Not used here any more, but still this process's for a moment: a user's next message
    # finds it held, and another worker cannot take it meanwhile.
    assert await other.acquire(names) == set()
    assert await first.acquire(names[:1]) == {names[0]}  # used again: kept
    await asyncio.sleep(0.6)
    held = await store.holders(names)
    assert held == {names[0]: first.holder, names[2]: first.holder}
    assert await other.acquire(names) == {names[1]}
    await first.close()  # gives back what it holds and what it was letting go
    assert await store.holders(names) == {names[1]: other.holder}
    await other.close()
    assert await store.holders(names) == {}


async def test_the_sqlite_wal_is_checkpointed_outside_commits_and_stays_bounded(
    tmp_path: Path,
) -> None:
    # SQLite's own checkpoints are off (they ran inside whichever commit crossed the line, a
    # webhook's); the writers' turn runs them in a thread instead. Without them the WAL
    # would hold all 24 MB written here.
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'bot.db'}")
    wal = tmp_path / "bot.db-wal"
    try:
        largest = 0
        for batch in range(48):
            events = [
                NewEvent(
                    channel=Channel.LINE,
                    event_id=f"e{batch}-{n}",
                    address=f"U{n}",
                    payload={"text": "あ" * 1000},
                    occurred_at=T0,
                )
                for n in range(160)
            ]
            await store.record_events(events)  # about 0.5 MB
            await asyncio.sleep(0.02)  # the checkpoint's thread gets its moment
            largest = max(largest, wal.stat().st_size)
        assert largest < 12 * 1024 * 1024
    finally:
        await store.close()
