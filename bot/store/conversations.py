"""Conversations: their state, transcript and turns (a turn also marks its inbox event and
queues its reply, in one transaction)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.errors import BotError, StoreError
from bot.models import Channel, ConversationKey, ConversationState, Mode, Status, StoredMessage
from bot.records import Fact, NewTimer, Timer
from bot.store.db import Database
from bot.store.facts import RETURNED, add_counts
from bot.store.inbox import claim_events, unclaim_events
from bot.store.schema import conversations, facts, inbox, messages, outbox
from bot.store.timers import arm_timers, claim_timers, timer_row, unclaim_timers
from bot.store.tx import IN_LIST, built_once, by_channel, insert_for, now_or

_STATE_FIELDS: Final = tuple(ConversationState.model_fields)
_PURGE_BATCH: Final = 500  # stays well under SQLite's and asyncpg's bound-parameter limits

Direction = Literal["in", "out"]
Sender = Literal["user", "bot", "agent", "note", "system"]


class ConcurrentUpdate(StoreError):
    """Someone saved the conversation since it was loaded (or created it first): reload, retry."""

    def __init__(self, key: ConversationKey, expected_version: int | None) -> None:
        self.key = key
        self.expected_version = expected_version
        super().__init__(f"{key} is no longer at version {expected_version}")

    def __repr__(self) -> str:
        return f"ConcurrentUpdate(key={str(self.key)!r}, expected_version={self.expected_version})"


class AlreadyHandled(BotError):
    """The inbound event this turn answers was marked processed by someone else first (another
    worker given the same event, or an earlier run): nothing of the turn was written."""

    def __init__(self, inbox_id: int) -> None:
        self.inbox_id = inbox_id
        super().__init__(f"inbox event {inbox_id} was handled already")


class TimerGone(BotError):
    """The timer this turn fires was settled, cancelled or rescheduled by someone else first:
    nothing of the turn was written."""

    def __init__(self, timer_id: int) -> None:
        self.timer_id = timer_id
        super().__init__(f"timer {timer_id} is no longer due as found")


class UnknownConversation(StoreError):
    """The conversation asked for does not exist."""

    def __init__(self, key: ConversationKey) -> None:
        self.key = key
        super().__init__(f"no conversation {key}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptEntry:
    """One line to append to a transcript."""

    direction: Direction
    sender: Sender
    text: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredConversation:
    id: int
    key: ConversationKey
    state: ConversationState
    mode: Mode
    agent: str | None
    version: int  # pass back as `expected_version` when saving
    updated_at: datetime
    variant: str = ""  # the flow variant the conversation runs (A/B tests)
    run_at: datetime | None = None  # when its current run began (analytics)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnWrite:
    """Everything one turn writes (see `SqlStore.save_turns`)."""

    key: ConversationKey
    state: ConversationState
    expected_version: int | None  # None: create the conversation
    conversation_id: int | None = None  # needed to update (as loaded with its version)
    inbound: Sequence[TranscriptEntry] = ()
    outbound: Sequence[TranscriptEntry] = ()
    deliver: Sequence[Mapping[str, Any]] | None = None  # messages for the outbox
    mode: Mode | None = None  # a new mode, or None to keep it
    inbox_id: int | None = None  # the recorded inbound event this turn answers
    reply_token: str | None = None  # kept with the outbox item (see OutboxItem)
    event_at: datetime | None = None  # when the event answered happened (the token's age)
    timer: Timer | None = None  # the due timer this turn fires (marked fired with it)
    timers: Sequence[NewTimer] = ()  # timers this turn schedules (e.g. the flow's follow-ups)
    variant: str = ""  # the flow variant (kept on the conversation, carried by its facts)
    run_at: datetime | None = None  # the conversation's current run, as loaded
    facts: Sequence[Fact] = ()  # what analytics records of this turn (see `Fact`)
    new_run: bool = False  # the turn began a run: its facts and the next ones date from now


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedTurn:
    conversation_id: int
    version: int
    outbox_id: int | None
    last_message_id: int = 0  # the newest transcript line it wrote (0: none)


class Conversations(Database):
    """Conversations and their turns; each method is one transaction."""

    async def load(self, key: ConversationKey) -> StoredConversation | None:
        async with self._read() as connection:
            row = (
                await connection.execute(sa.select(conversations).where(*_is(key)))
            ).one_or_none()
        return None if row is None else _conversation(row._mapping)

    async def load_by_id(self, conversation_id: int) -> StoredConversation | None:
        async with self._read() as connection:
            row = (
                await connection.execute(
                    sa.select(conversations).where(conversations.c.id == conversation_id)
                )
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
        async with self._read() as connection:
            for channel, addresses in by_channel(wanted).items():
                for start in range(0, len(addresses), IN_LIST):
                    rows = await connection.execute(
                        sa.select(conversations).where(
                            c.channel == channel,
                            c.address.in_(addresses[start : start + IN_LIST]),
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
        conversation_id, variant, run_at = None, "", None
        if expected_version is not None:
            stored = await self.load(key)
            if stored is None:
                raise ConcurrentUpdate(key, expected_version)
            conversation_id, variant, run_at = stored.id, stored.variant, stored.run_at
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
            variant=variant,  # kept as it was: this path records no facts
            run_at=run_at,
        )
        (saved,) = await self.save_turns([write], now=now)
        if isinstance(saved, (ConcurrentUpdate, AlreadyHandled, TimerGone)):
            raise saved
        return saved

    async def save_turns(
        self, writes: Sequence[TurnWrite], *, now: datetime | None = None
    ) -> list[SavedTurn | ConcurrentUpdate | AlreadyHandled | TimerGone]:
        """`save_turn` for many conversations in one transaction (a batch of turns).

        Answers in the order given: what was saved, or a ConcurrentUpdate, of which nothing is
        written: the turn lost its race, or (SQLite) some turn of the batch did and the batch
        cannot tell which, so every turn of it is to be retried. AlreadyHandled: the turn's
        inbox event was marked processed by someone else first, and nothing of it is written
        (an event's effects commit at most once, whoever runs it); TimerGone likewise for a
        turn's timer (`TurnWrite.timer`). Keys must be distinct; an
        update names the `conversation_id` it loaded with its version.
        """
        now = now_or(now)
        for write in writes:
            if write.expected_version is not None and write.conversation_id is None:
                raise ValueError(f"{write.key}: an update needs the conversation's id")
        answers: list[SavedTurn | ConcurrentUpdate | AlreadyHandled | TimerGone] = []
        lines: list[dict[str, Any]] = []
        line_owners: list[int] = []  # for each line, the index of its turn in `answers`
        deliveries: list[tuple[int, dict[str, Any]]] = []  # (index in answers, outbox row)
        arming: list[dict[str, Any]] = []  # timers the turns schedule
        try:
            async with self._begin() as connection:
                # A few statements for the whole batch, whatever its size. Writes come first:
                # on SQLite a transaction that reads before writing fails outright when another
                # process wrote in between, where one that writes first waits its turn.
                # The inbox marks first of all: the conditional UPDATE takes each event's row
                # (on PostgreSQL a second writer waits on it, then finds it marked), and a turn
                # whose event someone else marked first writes nothing.
                claimed = await claim_events(
                    connection, [w.inbox_id for w in writes if w.inbox_id is not None], now
                )
                taken = {
                    w.key for w in writes if w.inbox_id is not None and w.inbox_id not in claimed
                }
                # A timer's turn likewise: whoever marks the timer fired writes its turn.
                fired = await claim_timers(
                    connection, [w.timer for w in writes if w.timer and w.key not in taken], now
                )
                gone = {w.key for w in writes if w.timer is not None and w.timer.id not in fired}
                taken |= gone
                mine = [w for w in writes if w.key not in taken]
                creates = [w for w in mine if w.expected_version is None]
                created = await _create_many(connection, creates, now)
                lost = await _update_many(
                    connection, [w for w in mine if w.expected_version is not None], now
                )
                lost |= {w.key for w in creates if w.key not in created}
                if lost and claimed:
                    # A turn that lost its race is re-run, and must find its event unmarked.
                    await unclaim_events(
                        connection,
                        [w.inbox_id for w in mine if w.key in lost and w.inbox_id is not None],
                    )
                if lost and fired:
                    await unclaim_timers(
                        connection, [w.timer.id for w in mine if w.key in lost and w.timer]
                    )
                for write in writes:
                    if write.key in gone:
                        assert write.timer is not None
                        answers.append(TimerGone(write.timer.id))
                        continue
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
                    entries = (*write.inbound, *write.outbound)
                    lines += [_message(conversation_id, e, now) for e in entries]
                    line_owners += [len(answers) - 1] * len(entries)
                    if write.deliver is not None:
                        deliveries.append(
                            (len(answers) - 1, _outbox_row(conversation_id, write, now))
                        )
                    arming += [
                        timer_row(
                            f"{new.kind}:{conversation_id}:{new.name}",
                            kind=new.kind,
                            conversation_id=conversation_id,
                            due_at=new.due_at,
                            payload=new.payload,
                            now=now,
                        )
                        for new in write.timers
                    ]
                if lines:
                    line_ids = await connection.execute(_INSERT_LINES, lines)
                    for index, line_id in zip(line_owners, line_ids.scalars(), strict=True):
                        saved = answers[index]
                        assert isinstance(saved, SavedTurn)
                        answers[index] = replace(saved, last_message_id=line_id)
                fact_rows = [
                    row
                    for write, answer in zip(writes, answers, strict=True)
                    if isinstance(answer, SavedTurn)
                    for row in _fact_rows(answer.conversation_id, write, now)
                ]
                if fact_rows:
                    inserted = await connection.execute(_insert_facts(connection), fact_rows)
                    await add_counts(connection, inserted.all())
                if deliveries:
                    ids = await connection.execute(
                        _INSERT_DELIVERIES, [row for _, row in deliveries]
                    )
                    for (index, _), outbox_id in zip(deliveries, ids.scalars(), strict=True):
                        saved = answers[index]
                        assert isinstance(saved, SavedTurn)
                        answers[index] = replace(saved, outbox_id=outbox_id)
                if arming:
                    await arm_timers(connection, arming)
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
                _touch(key, now_or(now)).values(mode=mode.value, agent=agent)
            )
            if result.rowcount == 0:
                raise UnknownConversation(key)

    async def mark_inactive(self, key: ConversationKey, *, now: datetime | None = None) -> None:
        """The user left the channel; unknown keys are fine (we may never have talked)."""
        async with self._begin() as connection:
            await connection.execute(_touch(key, now_or(now)).values(status=Status.INACTIVE.value))

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
        async with self._read() as connection:
            rows = (await connection.execute(sa.select(newest).order_by(newest.c.id))).all()
        return [StoredMessage.model_validate(row._asdict()) for row in rows]

    async def counts_by_state(self) -> dict[str, int]:
        return await self._count_by(conversations.c.state)

    async def counts_by_mode(self) -> dict[str, int]:
        return await self._count_by(conversations.c.mode)

    async def purge_inactive(self, older_than: datetime) -> int:
        """Delete conversations untouched since `older_than` whose users left (LINE unfollow)
        or that are web chats (a browser session nobody comes back to), with their transcript
        and outbox (by cascade), and blank their processed inbox events; returns how many.
        Every processed inbox event received before `older_than` is blanked too (the agents'
        own words in the Slack agent channel among them): only its id stays, to know a late
        redelivery as seen."""
        c = conversations.c
        async with self._begin() as connection:
            # One DELETE ... RETURNING decides and deletes at once: a conversation reactivated
            # meanwhile no longer matches, so nothing of it is touched.
            gone = (
                await connection.execute(
                    sa.delete(conversations)
                    .where(
                        sa.or_(
                            c.status == Status.INACTIVE.value,
                            c.channel == Channel.WEB.value,
                        ),
                        c.updated_at < older_than,
                    )
                    .returning(c.channel, c.address)
                )
            ).all()
            await connection.execute(
                sa.update(inbox)
                .where(
                    inbox.c.received_at < older_than,
                    inbox.c.processed_at.is_not(None),
                    inbox.c.payload.is_not(None),
                )
                .values(payload=sa.null(), address="")
            )
            for channel, addresses in by_channel((r.channel, r.address) for r in gone).items():
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

    async def _count_by(self, column: sa.Column[Any]) -> dict[str, int]:
        async with self._scan() as connection:
            rows = await connection.execute(sa.select(column, sa.func.count()).group_by(column))
            return {value: count for value, count in rows}


def _is(key: ConversationKey) -> tuple[sa.ColumnElement[bool], ...]:
    return (conversations.c.channel == key.channel.value, conversations.c.address == key.address)


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
    for channel, addresses in by_channel((key.channel.value, key.address) for key in keys).items():
        for start in range(0, len(addresses), IN_LIST):
            rows = await connection.execute(
                sa.select(c.address, c.version)
                .where(c.channel == channel, c.address.in_(addresses[start : start + IN_LIST]))
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
    created: dict[ConversationKey, int] = {}
    if not writes:
        return created
    rows = [
        {
            **_state_values(write, now),
            "run_at": now if write.new_run else None,
            "mode": (write.mode or Mode.BOT).value,
            "agent": None,
            "channel": write.key.channel.value,
            "address": write.key.address,
            "version": 1,
            "created_at": now,
        }
        for write in writes
    ]
    # The rows as parameters, not `.values(rows)`: SQLAlchemy compiles the statement once and
    # sends the rows as multi-row INSERTs under the driver's limits (its "insertmanyvalues");
    # a `.values()` list was compiled anew for every batch, a tenth of a worker's time.
    inserted = await connection.execute(_create_conversations(connection), rows)
    for row in inserted:
        created[ConversationKey(channel=Channel(row.channel), address=row.address)] = row.id
    return created


def _state_values(write: TurnWrite, now: datetime) -> dict[str, Any]:
    row = {**write.state.model_dump(mode="json"), "updated_at": now, "variant": write.variant}
    if write.new_run:
        row["run_at"] = now
    return row


@built_once
def _insert_facts(dialect: str) -> sa.Insert:
    """INSERT of facts where a funnel step already reached in the run is skipped."""
    f = facts.c
    return (
        insert_for(dialect, facts)
        .on_conflict_do_nothing(
            index_elements=[f.conversation_id, f.run_at, f.value],
            index_where=sa.text("kind = 'step'"),
        )
        .returning(*RETURNED)
    )


@built_once
def _create_conversations(dialect: str) -> sa.Insert:
    c = conversations.c
    return (
        insert_for(dialect, conversations)
        .on_conflict_do_nothing(index_elements=[c.channel, c.address])
        .returning(c.id, c.channel, c.address)
    )


_INSERT_LINES: Final = sa.insert(messages).returning(messages.c.id, sort_by_parameter_order=True)
_INSERT_DELIVERIES: Final = sa.insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True)


def _fact_rows(conversation_id: int, write: TurnWrite, now: datetime) -> list[dict[str, Any]]:
    """The turn's facts as rows; none before the conversation's first run began."""
    run_at = now if write.new_run else write.run_at
    if run_at is None:
        return []
    return [
        fact_row(
            fact,
            conversation_id=conversation_id,
            run_at=run_at,
            at=now,
            flow=write.state.flow,
            flow_version=write.state.flow_version,
            variant=write.variant,
            channel=write.key.channel.value,
        )
        for fact in write.facts
    ]


def fact_row(
    fact: Fact,
    *,
    conversation_id: int,
    run_at: datetime,
    at: datetime,
    flow: str,
    flow_version: str,
    variant: str,
    channel: str,
) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "run_at": run_at,
        "at": at,
        "kind": fact.kind,
        "flow": flow,
        "flow_version": flow_version,
        "variant": variant,
        "channel": channel,
        "state": fact.state,
        "value": fact.value,
        "how": fact.how,
        "stage": fact.stage,
        "seconds": fact.seconds,
    }


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
        variant=row["variant"],
        run_at=row["run_at"],
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
