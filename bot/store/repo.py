"""`SqlStore`: conversations, transcripts, inbox and outbox on SQLite or PostgreSQL."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import StoreError
from bot.models import Channel, ConversationKey, ConversationState, Mode, Status, StoredMessage
from bot.store.db import create_engine, migrate
from bot.store.records import (
    AlreadyHandled,
    ConcurrentUpdate,
    InboxEvent,
    InboxHealth,
    NewEvent,
    OutboxItem,
    SavedTurn,
    StoredConversation,
    TranscriptEntry,
    TurnWrite,
    UnknownConversation,
)
from bot.store.tables import conversations, inbox, messages, outbox

__all__ = [
    "AlreadyHandled",
    "ConcurrentUpdate",
    "InboxEvent",
    "InboxHealth",
    "NewEvent",
    "OutboxItem",
    "SavedTurn",
    "SqlStore",
    "StoredConversation",
    "TranscriptEntry",
    "TurnWrite",
    "UnknownConversation",
]

_STATE_FIELDS: Final = tuple(ConversationState.model_fields)
_PURGE_BATCH: Final = 500  # stays well under SQLite's and asyncpg's bound-parameter limits
_IN_LIST: Final = 500  # values in one IN (...): under the same limits
_CREATE_BATCH: Final = 125  # conversations per INSERT (17 parameters each): under the same limits


class SqlStore:
    """The store on SQLAlchemy Core; each method is one transaction."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> SqlStore:
        """Connect to `url` (plain or async form) and migrate it to the newest schema."""
        engine = create_engine(url, schema=schema)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine=engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        async with self._begin() as connection:
            await connection.execute(sa.select(1))

    # ------------------------------------------------------------ conversations

    async def load(self, key: ConversationKey) -> StoredConversation | None:
        async with self._begin() as connection:
            row = (
                await connection.execute(sa.select(conversations).where(*_is(key)))
            ).one_or_none()
        return None if row is None else _conversation(row._mapping)

    async def load_many(
        self, keys: Iterable[ConversationKey]
    ) -> dict[ConversationKey, StoredConversation]:
        """The conversations that exist among `keys`, in one query (a batch of turns)."""
        wanted = {(key.channel.value, key.address) for key in keys}
        found: dict[ConversationKey, StoredConversation] = {}
        if not wanted:
            return found
        c = conversations.c
        async with self._begin() as connection:
            for channel, addresses in _group(wanted).items():
                for start in range(0, len(addresses), _IN_LIST):
                    rows = await connection.execute(
                        sa.select(conversations).where(
                            c.channel == channel,
                            c.address.in_(addresses[start : start + _IN_LIST]),
                        )
                    )
                    for row in rows:
                        stored = _conversation(row._mapping)
                        found[stored.key] = stored
        return found

    async def save_turn(
        self,
        key: ConversationKey,
        *,
        state: ConversationState,
        expected_version: int | None,
        inbound: Sequence[TranscriptEntry],
        outbound: Sequence[TranscriptEntry],
        deliver: Sequence[Mapping[str, Any]] | None = None,
        mode: Mode | None = None,
        inbox_id: int | None = None,
        now: datetime | None = None,
    ) -> SavedTurn:
        """Save state, transcript and outbox together (and mark `inbox_id` processed).

        Marking the inbound event in the same transaction is what makes a webhook event's
        effect exactly-once: after a crash, either the whole turn is there or none of it is.

        `expected_version` None creates the conversation, else it must still be at that version;
        either way a lost race raises ConcurrentUpdate and nothing is written. A `mode` other
        than AGENT clears the agent (the bot path never assigns one; see `set_mode`).
        """
        conversation_id = None
        if expected_version is not None:
            stored = await self.load(key)
            if stored is None:
                raise ConcurrentUpdate(key, expected_version)
            conversation_id = stored.id
        write = TurnWrite(
            key=key,
            state=state,
            expected_version=expected_version,
            conversation_id=conversation_id,
            inbound=inbound,
            outbound=outbound,
            deliver=deliver,
            mode=mode,
            inbox_id=inbox_id,
        )
        (saved,) = await self.save_turns([write], now=now)
        if isinstance(saved, (ConcurrentUpdate, AlreadyHandled)):
            raise saved
        return saved

    async def save_turns(
        self, writes: Sequence[TurnWrite], *, now: datetime | None = None
    ) -> list[SavedTurn | ConcurrentUpdate | AlreadyHandled]:
        """`save_turn` for many conversations in one transaction (a batch of turns).

        Answers in the order given: what was saved, or a ConcurrentUpdate, of which nothing is
        written: the turn lost its race, or (SQLite) some turn of the batch did and the batch
        cannot tell which, so every turn of it is to be retried. AlreadyHandled: the turn's
        inbox event was marked processed by someone else first, and nothing of it is written
        (an event's effects commit at most once, whoever runs it). Keys must be distinct; an
        update names the `conversation_id` it loaded with its version.
        """
        now = _now(now)
        for write in writes:
            if write.expected_version is not None and write.conversation_id is None:
                raise ValueError(f"{write.key}: an update needs the conversation's id")
        answers: list[SavedTurn | ConcurrentUpdate | AlreadyHandled] = []
        lines: list[dict[str, Any]] = []
        deliveries: list[tuple[int, dict[str, Any]]] = []  # (index in answers, outbox row)
        try:
            async with self._begin() as connection:
                # A few statements for the whole batch, whatever its size. Writes come first:
                # on SQLite a transaction that reads before writing fails outright when another
                # process wrote in between, where one that writes first waits its turn.
                # The inbox marks first of all: the conditional UPDATE takes each event's row
                # (on PostgreSQL a second writer waits on it, then finds it marked), and a turn
                # whose event someone else marked first writes nothing.
                claimed = await _claim_events(
                    connection, [w.inbox_id for w in writes if w.inbox_id is not None], now
                )
                taken = {
                    w.key for w in writes if w.inbox_id is not None and w.inbox_id not in claimed
                }
                mine = [w for w in writes if w.key not in taken]
                creates = [w for w in mine if w.expected_version is None]
                created = await _create_many(connection, creates, now)
                lost = await _update_many(
                    connection, [w for w in mine if w.expected_version is not None], now
                )
                lost |= {w.key for w in creates if w.key not in created}
                if lost and claimed:
                    # A turn that lost its race is re-run, and must find its event unmarked.
                    await _unclaim_events(
                        connection,
                        [w.inbox_id for w in mine if w.key in lost and w.inbox_id is not None],
                    )
                for write in writes:
                    if write.key in taken:
                        assert write.inbox_id is not None
                        answers.append(AlreadyHandled(write.inbox_id))
                        continue
                    if write.expected_version is None:
                        conversation_id, version = created.get(write.key, 0), 1
                        won = conversation_id != 0
                    else:
                        assert write.conversation_id is not None
                        conversation_id, version = write.conversation_id, write.expected_version + 1
                        won = write.key not in lost
                    if not won:
                        answers.append(ConcurrentUpdate(write.key, write.expected_version))
                        continue
                    answers.append(
                        SavedTurn(conversation_id=conversation_id, version=version, outbox_id=None)
                    )
                    lines += [
                        _message(conversation_id, e, now) for e in (*write.inbound, *write.outbound)
                    ]
                    if write.deliver is not None:
                        deliveries.append(
                            (len(answers) - 1, _outbox_row(conversation_id, write, now))
                        )
                if lines:
                    await connection.execute(sa.insert(messages), lines)
                if deliveries:
                    ids = await connection.execute(
                        sa.insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                        [row for _, row in deliveries],
                    )
                    for (index, _), outbox_id in zip(deliveries, ids.scalars(), strict=True):
                        saved = answers[index]
                        assert isinstance(saved, SavedTurn)
                        answers[index] = SavedTurn(
                            conversation_id=saved.conversation_id,
                            version=saved.version,
                            outbox_id=outbox_id,
                        )
        except _RaceInBatch:
            # Someone else saved one of these conversations meanwhile and the batch cannot
            # tell which: nothing was written; each turn is retried on its own.
            return [ConcurrentUpdate(write.key, write.expected_version) for write in writes]
        return answers

    async def set_mode(
        self,
        key: ConversationKey,
        mode: Mode,
        agent: str | None = None,
        *,
        now: datetime | None = None,
    ) -> None:
        """Hand the conversation to `mode` (and `agent`); bumps the version so a turn in flight
        conflicts and is re-run under the new mode."""
        async with self._begin() as connection:
            result = await connection.execute(
                _touch(key, _now(now)).values(mode=mode.value, agent=agent)
            )
            if result.rowcount == 0:
                raise UnknownConversation(key)

    async def mark_inactive(self, key: ConversationKey, *, now: datetime | None = None) -> None:
        """The user left the channel; unknown keys are fine (we may never have talked)."""
        async with self._begin() as connection:
            await connection.execute(_touch(key, _now(now)).values(status=Status.INACTIVE.value))

    async def transcript(self, conversation_id: int, *, limit: int = 200) -> list[StoredMessage]:
        """The newest `limit` messages, oldest first."""
        m = messages.c
        newest = (
            sa.select(m.id, m.direction, m.sender, m.text, m.body, m.created_at)
            .where(m.conversation_id == conversation_id)
            .order_by(m.id.desc())
            .limit(limit)
            .subquery()
        )
        async with self._begin() as connection:
            rows = (await connection.execute(sa.select(newest).order_by(newest.c.id))).all()
        return [StoredMessage.model_validate(row._asdict()) for row in rows]

    async def counts_by_state(self) -> dict[str, int]:
        return await self._count_by(conversations.c.state)

    async def counts_by_mode(self) -> dict[str, int]:
        return await self._count_by(conversations.c.mode)

    async def purge_inactive(self, older_than: datetime) -> int:
        """Delete inactive conversations untouched since `older_than`, with their transcript and
        outbox (by cascade), and blank their processed inbox events; returns how many."""
        c = conversations.c
        async with self._begin() as connection:
            # One DELETE ... RETURNING decides and deletes at once: a conversation reactivated
            # meanwhile no longer matches, so nothing of it is touched.
            gone = (
                await connection.execute(
                    sa.delete(conversations)
                    .where(c.status == Status.INACTIVE.value, c.updated_at < older_than)
                    .returning(c.channel, c.address)
                )
            ).all()
            for channel, addresses in _group((r.channel, r.address) for r in gone).items():
                for start in range(0, len(addresses), _PURGE_BATCH):
                    batch = addresses[start : start + _PURGE_BATCH]
                    # The row (channel, event_id) stays so a redelivery is still known as seen.
                    await connection.execute(
                        sa.update(inbox)
                        .where(
                            inbox.c.channel == channel,
                            inbox.c.address.in_(batch),
                            inbox.c.processed_at.is_not(None),
                        )
                        .values(payload=sa.null(), address="")
                    )
        return len(gone)

    # ------------------------------------------------------------ inbox

    async def record_event(
        self,
        *,
        channel: Channel | str,
        event_id: str,
        address: str,
        payload: Mapping[str, Any],
        occurred_at: datetime,
        now: datetime | None = None,
    ) -> bool:
        """Keep an inbound event durably; False if this (channel, event_id) was seen before."""
        values = {
            "channel": Channel(channel).value,
            "event_id": event_id,
            "address": address,
            "payload": dict(payload),
            "occurred_at": occurred_at,
            "received_at": _now(now),
            "attempts": 0,
        }
        async with self._begin() as connection:
            # ON CONFLICT rather than catching IntegrityError: the loser of a race learns it
            # without an error, and a PostgreSQL transaction is not left aborted.
            inserted = await connection.execute(
                _insert(connection, inbox)
                .values(values)
                .on_conflict_do_nothing(index_elements=[inbox.c.channel, inbox.c.event_id])
                .returning(inbox.c.id)
            )
            return inserted.scalar_one_or_none() is not None

    async def record_events(
        self, events: Sequence[NewEvent], *, now: datetime | None = None
    ) -> list[InboxEvent | None]:
        """Keep many inbound events in one transaction (a group commit of webhook requests).

        Returns, in the order given, each event as recorded, or None where its (channel,
        event_id) was seen before (also earlier in `events`).
        """
        received_at = _now(now)
        first: dict[tuple[str, str], NewEvent] = {}
        for new in events:
            first.setdefault((Channel(new.channel).value, new.event_id), new)
        recorded: dict[tuple[str, str], int] = {}  # (channel, event_id) -> inbox id
        if not first:
            return []
        async with self._begin() as connection:
            # One INSERT ... ON CONFLICT DO NOTHING RETURNING for the lot (SQLAlchemy sends it
            # as multi-row statements from one cached compilation): only the rows inserted now
            # come back, in no promised order, so the losers of a race, here or in another
            # process, learn it without an error.
            inserted = await connection.execute(
                _insert(connection, inbox)
                .on_conflict_do_nothing(index_elements=[inbox.c.channel, inbox.c.event_id])
                .returning(inbox.c.id, inbox.c.channel, inbox.c.event_id),
                [_new_event(key, new, received_at) for key, new in first.items()],
            )
            for row in inserted:
                recorded[(row.channel, row.event_id)] = row.id
        answers: list[InboxEvent | None] = []
        for new in events:
            key = (Channel(new.channel).value, new.event_id)
            inbox_id = recorded.pop(key, None)  # a repeat within `events` gets None
            answers.append(
                None
                if inbox_id is None
                else InboxEvent(
                    id=inbox_id,
                    channel=Channel(new.channel),
                    event_id=new.event_id,
                    address=new.address,
                    payload=dict(new.payload),
                    occurred_at=new.occurred_at,
                    received_at=received_at,
                    attempts=0,
                )
            )
        return answers

    async def pending_events(
        self,
        *,
        limit: int = 100,
        channel: Channel | str | None = None,
        address: str | None = None,
        after_id: int | None = None,
    ) -> list[InboxEvent]:
        """Unprocessed events in the order they happened; optionally of one channel/address.

        `after_id`: only events recorded after that one, in the order they were recorded (what
        a worker following the inbox has not seen yet)."""
        i = inbox.c
        where: list[sa.ColumnElement[bool]] = [i.processed_at.is_(None)]
        order: tuple[sa.ColumnElement[Any], ...] = (i.occurred_at, i.id)
        if after_id is not None:
            where.append(i.id > after_id)
            order = (i.id,)
        if channel is not None:
            where.append(i.channel == Channel(channel).value)
        if address is not None:
            where.append(i.address == address)
        async with self._begin() as connection:
            rows = (
                await connection.execute(
                    sa.select(inbox).where(*where).order_by(*order).limit(limit)
                )
            ).all()
        return [_event(row._mapping) for row in rows]

    async def pending_event(self, inbox_id: int) -> InboxEvent | None:
        """The event if it is still unprocessed, else None."""
        async with self._begin() as connection:
            row = (
                await connection.execute(
                    sa.select(inbox).where(inbox.c.id == inbox_id, inbox.c.processed_at.is_(None))
                )
            ).one_or_none()
        return None if row is None else _event(row._mapping)

    async def claim_event(self, inbox_id: int, *, now: datetime | None = None) -> bool:
        """Mark the event processed unless someone has; whether this call marked it. For
        events whose effect is not a turn: claimed first, so it happens at most once."""
        async with self._begin() as connection:
            return bool(await _claim_events(connection, [inbox_id], _now(now)))

    async def inbox_health(self) -> InboxHealth:
        """How the inbox drains: unprocessed events, when the oldest came, failed events."""
        i = inbox.c
        async with self._begin() as connection:
            pending = (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(inbox).where(i.processed_at.is_(None))
                )
            ).scalar_one()
            oldest = (
                await connection.execute(
                    sa.select(sa.func.min(i.received_at)).where(i.processed_at.is_(None))
                )
            ).scalar_one_or_none()
            failed = (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(inbox).where(i.error.is_not(None))
                )
            ).scalar_one()
        return InboxHealth(pending=pending, oldest_received=oldest, failed=failed)

    async def mark_processed(
        self, inbox_id: int, *, error: str | None = None, now: datetime | None = None
    ) -> None:
        """Done with an event; an `error` is kept for inspection and the event is not retried."""
        async with self._begin() as connection:
            await connection.execute(
                sa.update(inbox)
                .where(inbox.c.id == inbox_id)
                .values(processed_at=_now(now), error=error, attempts=inbox.c.attempts + 1)
            )

    # ------------------------------------------------------------ outbox
    # Each mark_* / bump_attempt records the outcome of one delivery attempt.

    async def outbox_pending(
        self,
        *,
        limit: int = 100,
        channel: Channel | None = None,
        conversation_ids: Sequence[int] | None = None,
        after_id: int = 0,
    ) -> list[OutboxItem]:
        """Undelivered messages, oldest first; optionally of one channel or some
        conversations only, and past `after_id` (for paging)."""
        o = outbox.c
        where: list[sa.ColumnElement[bool]] = [o.status == "pending", o.id > after_id]
        if channel is not None:
            where.append(o.channel == channel.value)
        if conversation_ids is not None:
            where.append(o.conversation_id.in_(sorted(set(conversation_ids))[:_IN_LIST]))
        async with self._begin() as connection:
            rows = (
                await connection.execute(
                    sa.select(outbox).where(*where).order_by(o.id).limit(limit)
                )
            ).all()
        return [_outbox_item(row._mapping) for row in rows]

    async def mark_sent(self, outbox_id: int, *, now: datetime | None = None) -> None:
        await self._attempted(outbox_id, status="sent", sent_at=_now(now))

    async def mark_sent_many(
        self, outbox_ids: Sequence[int], *, now: datetime | None = None
    ) -> list[None]:
        """`mark_sent` for many items in one transaction (a group commit of deliveries).

        Returns one None per id given, as `GroupCommit` expects."""
        sent_at = _now(now)
        unique = sorted(set(outbox_ids))
        async with self._begin() as connection:
            for start in range(0, len(unique), _PURGE_BATCH):
                await connection.execute(
                    sa.update(outbox)
                    .where(outbox.c.id.in_(unique[start : start + _PURGE_BATCH]))
                    .values(attempts=outbox.c.attempts + 1, status="sent", sent_at=sent_at)
                )
        return [None] * len(outbox_ids)

    async def mark_failed(self, outbox_id: int, error: str) -> None:
        """Give up on delivering this item."""
        await self._attempted(outbox_id, status="failed", last_error=error)

    async def bump_attempt(self, outbox_id: int, error: str) -> None:
        """A delivery attempt failed; the item stays pending for another try."""
        await self._attempted(outbox_id, last_error=error)

    # ------------------------------------------------------------ private

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as connection:
                yield connection
        except StoreError:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            # Engines hide bound parameters, so this message carries no user text.
            raise StoreError(f"{type(error).__name__}: {error}") from error

    async def _attempted(self, outbox_id: int, **values: Any) -> None:
        async with self._begin() as connection:
            await connection.execute(
                sa.update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(attempts=outbox.c.attempts + 1, **values)
            )

    async def _count_by(self, column: sa.Column[Any]) -> dict[str, int]:
        async with self._begin() as connection:
            rows = await connection.execute(sa.select(column, sa.func.count()).group_by(column))
            return {value: count for value, count in rows}


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


def _is(key: ConversationKey) -> tuple[sa.ColumnElement[bool], ...]:
    return (conversations.c.channel == key.channel.value, conversations.c.address == key.address)


def _insert(connection: AsyncConnection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT with ON CONFLICT, which both backends spell the same but SQLAlchemy keeps apart."""
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


async def _claim_events(
    connection: AsyncConnection, inbox_ids: Sequence[int], now: datetime
) -> set[int]:
    """Mark these events processed where nobody has yet; the ids this transaction marked."""
    claimed: set[int] = set()
    unique = sorted(set(inbox_ids))  # in id order: two claimers lock rows in the same order
    for start in range(0, len(unique), _IN_LIST):
        rows = await connection.execute(
            sa.update(inbox)
            .where(
                inbox.c.id.in_(unique[start : start + _IN_LIST]),
                inbox.c.processed_at.is_(None),
            )
            .values(processed_at=now, attempts=inbox.c.attempts + 1)
            .returning(inbox.c.id)
        )
        claimed.update(rows.scalars())
    return claimed


async def _unclaim_events(connection: AsyncConnection, inbox_ids: Sequence[int]) -> None:
    """Undo `_claim_events` for turns that lost their race (they are run again)."""
    for start in range(0, len(inbox_ids), _IN_LIST):
        await connection.execute(
            sa.update(inbox)
            .where(inbox.c.id.in_(inbox_ids[start : start + _IN_LIST]))
            .values(processed_at=None, attempts=inbox.c.attempts - 1)
        )


class _RaceInBatch(Exception):
    """A batch's UPDATE matched fewer rows than it had turns (see `_update_many`)."""


async def _update_many(
    connection: AsyncConnection, writes: Sequence[TurnWrite], now: datetime
) -> set[ConversationKey]:
    """Update conversations still at their expected versions; the keys of those that were not
    (their turns lost a race, and nothing of theirs may be written)."""
    rows: dict[tuple[str, ...], list[tuple[TurnWrite, dict[str, Any]]]] = {}
    for write in writes:
        row = _updated_row(write, now)
        rows.setdefault(tuple(sorted(row)), []).append((write, row))
    lost: set[ConversationKey] = set()
    if not connection.dialect.supports_sane_multi_rowcount:
        # PostgreSQL: lock the rows, compare versions, update the winners.
        versions = await _lock_versions(connection, [w.key for w in writes])
        lost = {w.key for w in writes if versions.get(w.key) != w.expected_version}
    for columns, group in rows.items():
        group = [(write, row) for write, row in group if write.key not in lost]
        if not group:
            continue
        result = await connection.execute(_update_statement(columns), [row for _, row in group])
        if not connection.dialect.supports_sane_multi_rowcount:
            continue
        # SQLite counts the rows an executemany matched: each turn's version is in its WHERE.
        if len(group) == 1 and result.rowcount == 0:
            lost.add(group[0][0].key)
        elif result.rowcount != len(group):
            raise _RaceInBatch()
    return lost


async def _lock_versions(
    connection: AsyncConnection, keys: Sequence[ConversationKey]
) -> dict[ConversationKey, int]:
    """Versions of existing conversations, locked until the transaction ends (PostgreSQL)."""
    c = conversations.c
    found: dict[ConversationKey, int] = {}
    for channel, addresses in _group((key.channel.value, key.address) for key in keys).items():
        for start in range(0, len(addresses), _IN_LIST):
            rows = await connection.execute(
                sa.select(c.address, c.version)
                .where(c.channel == channel, c.address.in_(addresses[start : start + _IN_LIST]))
                .with_for_update()
            )
            for row in rows:
                found[ConversationKey(channel=Channel(channel), address=row.address)] = row.version
    return found


async def _create_many(
    connection: AsyncConnection, writes: Sequence[TurnWrite], now: datetime
) -> dict[ConversationKey, int]:
    """Create conversations; the ids of those created (whoever created one first wins: the
    loser finds its key missing, not an IntegrityError)."""
    c = conversations.c
    created: dict[ConversationKey, int] = {}
    for start in range(0, len(writes), _CREATE_BATCH):
        rows = [
            {
                **_state_values(write, now),
                "mode": (write.mode or Mode.BOT).value,
                "agent": None,
                "channel": write.key.channel.value,
                "address": write.key.address,
                "version": 1,
                "created_at": now,
            }
            for write in writes[start : start + _CREATE_BATCH]
        ]
        inserted = await connection.execute(
            _insert(connection, conversations)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[c.channel, c.address])
            .returning(c.id, c.channel, c.address)
        )
        for row in inserted:
            created[ConversationKey(channel=Channel(row.channel), address=row.address)] = row.id
    return created


def _state_values(write: TurnWrite, now: datetime) -> dict[str, Any]:
    return {**write.state.model_dump(mode="json"), "updated_at": now}


def _updated_row(write: TurnWrite, now: datetime) -> dict[str, Any]:
    """Parameters of `_update_statement`. A `mode` other than AGENT clears the agent (the bot
    path never assigns one; see `set_mode`)."""
    row = _state_values(write, now)
    if write.mode is not None:
        row["mode"] = write.mode.value
        if write.mode is not Mode.AGENT:
            row["agent"] = None
    return {**row, "row_id": write.conversation_id, "row_version": write.expected_version}


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> sa.Update:
    """UPDATE of `columns` (bound by name) of the row at `row_id` if still at `row_version`."""
    c = conversations.c
    return (
        sa.update(conversations)
        .where(c.id == sa.bindparam("row_id"), c.version == sa.bindparam("row_version"))
        .values(
            {
                **{name: sa.bindparam(name) for name in columns if not name.startswith("row_")},
                "version": c.version + 1,
            }
        )
    )


def _outbox_row(conversation_id: int, write: TurnWrite, now: datetime) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "channel": write.key.channel.value,
        "address": write.key.address,
        "payload": [dict(message) for message in write.deliver or ()],
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "reply_token": write.reply_token,
        "event_at": write.event_at,
    }


def _touch(key: ConversationKey, now: datetime) -> sa.Update:
    c = conversations.c
    return sa.update(conversations).where(*_is(key)).values(version=c.version + 1, updated_at=now)


def _message(conversation_id: int, entry: TranscriptEntry, now: datetime) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "direction": entry.direction,
        "sender": entry.sender,
        "text": entry.text,
        "body": entry.body,
        "created_at": now,
    }


def _conversation(row: sa.RowMapping) -> StoredConversation:
    return StoredConversation(
        id=row["id"],
        key=ConversationKey(channel=Channel(row["channel"]), address=row["address"]),
        state=ConversationState.model_validate({name: row[name] for name in _STATE_FIELDS}),
        mode=Mode(row["mode"]),
        agent=row["agent"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


def _new_event(key: tuple[str, str], new: NewEvent, received_at: datetime) -> dict[str, Any]:
    channel, event_id = key
    return {
        "channel": channel,
        "event_id": event_id,
        "address": new.address,
        "payload": dict(new.payload),
        "occurred_at": new.occurred_at,
        "received_at": received_at,
        "attempts": 0,
    }


def _event(row: sa.RowMapping) -> InboxEvent:
    return InboxEvent(
        id=row["id"],
        channel=Channel(row["channel"]),
        event_id=row["event_id"],
        address=row["address"],
        payload=row["payload"] or {},
        occurred_at=row["occurred_at"],
        received_at=row["received_at"],
        attempts=row["attempts"],
        processed_at=row["processed_at"],
        error=row["error"],
    )


def _outbox_item(row: sa.RowMapping) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        conversation_id=row["conversation_id"],
        channel=Channel(row["channel"]),
        address=row["address"],
        payload=row["payload"],
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        reply_token=row["reply_token"],
        event_at=row["event_at"],
    )


def _group(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Addresses by channel."""
    by_channel: dict[str, list[str]] = {}
    for channel, address in keys:
        by_channel.setdefault(channel, []).append(address)
    return by_channel
