"""The inbox: inbound events recorded before they are acknowledged, run once each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.models import Channel
from bot.records import InboxEvent, InboxHealth, NewEvent
from bot.store.db import Database
from bot.store.notify import ring
from bot.store.schema import inbox
from bot.store.sqlite_rows import insert_each
from bot.store.tx import IN_LIST, built_once, in_one_go, insert_for, now_or

_RECORDED: Final = ("channel", "event_id", "address", "payload", "occurred_at", "received_at")


@built_once
def _record_new(dialect: str) -> sa.Insert:
    return (
        insert_for(dialect, inbox)
        .values(
            {**{name: sa.bindparam(name) for name in _RECORDED}, "attempts": sa.literal_column("0")}
        )
        .on_conflict_do_nothing(index_elements=[inbox.c.channel, inbox.c.event_id])
        .returning(inbox.c.id, inbox.c.channel, inbox.c.event_id)
    )


class Inbox(Database):
    """Recorded inbound events; each method is one transaction."""

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
        new = NewEvent(
            channel=Channel(channel),
            event_id=event_id,
            address=address,
            payload=dict(payload),
            occurred_at=occurred_at,
        )
        [recorded] = await self.record_events([new], now=now)
        return recorded is not None

    async def record_events(
        self, events: Sequence[NewEvent], *, now: datetime | None = None
    ) -> list[InboxEvent | None]:
        """Keep many inbound events in one transaction (a group commit of webhook requests).

        Returns, in the order given, each event as recorded, or None where its (channel,
        event_id) was seen before (also earlier in `events`).
        """
        received_at = now_or(now)
        first: dict[tuple[str, str], NewEvent] = {}
        for new in events:
            first.setdefault((Channel(new.channel).value, new.event_id), new)
        if not first:
            return []
        rows = [_new_event(key, new, received_at) for key, new in first.items()]
        recorded = await in_one_go(self._engine, partial(_record, rows))
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
        if address is not None:
            where += _of_user(channel, address)
        elif channel is not None:
            where.append(i.channel == Channel(channel).value)
        # A user's events are picked out of every pending row (`pending_of_user`): with a
        # backlog of 200,000 that takes 13 ms, which on SQLite must not hold the event loop
        # (a Slack webhook asks it), so it reads in a thread.
        reading = self._read() if address is None else self._scan()
        async with reading as connection:
            rows = (
                await connection.execute(
                    sa.select(inbox).where(*where).order_by(*order).limit(limit)
                )
            ).all()
        return [_event(row._mapping) for row in rows]

    async def pending_ids(self, *, limit: int = 500, after_id: int = 0) -> list[int]:
        """Ids of unprocessed events recorded after `after_id`, in the order recorded: a cheap
        look over a long backlog (no payloads), for a worker that knows most of them already."""
        i = inbox.c
        async with self._read() as connection:
            rows = await connection.execute(
                sa.select(i.id)
                .where(i.processed_at.is_(None), i.id > after_id)
                .order_by(i.id)
                .limit(limit)
            )
            return list(rows.scalars())

    async def pending_by_id(self, inbox_ids: Sequence[int]) -> list[InboxEvent]:
        """These events where still unprocessed, in the order recorded."""
        found: list[InboxEvent] = []
        unique = sorted(set(inbox_ids))
        async with self._read() as connection:
            for start in range(0, len(unique), IN_LIST):
                rows = await connection.execute(
                    sa.select(inbox)
                    .where(
                        inbox.c.id.in_(unique[start : start + IN_LIST]),
                        inbox.c.processed_at.is_(None),
                    )
                    .order_by(inbox.c.id)
                )
                found += [_event(row._mapping) for row in rows]
        return found

    async def pending_event(self, inbox_id: int) -> InboxEvent | None:
        """The event if it is still unprocessed, else None."""
        async with self._read() as connection:
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
            return bool(await claim_events(connection, [inbox_id], now_or(now)))

    async def inbox_health(self) -> InboxHealth:
        """How the inbox drains: unprocessed events, when the oldest came, failed events."""
        i = inbox.c
        async with self._read() as connection:
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
                .values(processed_at=now_or(now), error=error, attempts=inbox.c.attempts + 1)
            )


async def claim_events(
    connection: AsyncConnection, inbox_ids: Sequence[int], now: datetime
) -> set[int]:
    """Mark these events processed where nobody has yet; the ids this transaction marked."""
    claimed: set[int] = set()
    unique = sorted(set(inbox_ids))  # in id order: two claimers lock rows in the same order
    for start in range(0, len(unique), IN_LIST):
        rows = await connection.execute(
            sa.update(inbox)
            .where(
                inbox.c.id.in_(unique[start : start + IN_LIST]),
                inbox.c.processed_at.is_(None),
            )
            .values(processed_at=now, attempts=inbox.c.attempts + 1)
            .returning(inbox.c.id)
        )
        claimed.update(rows.scalars())
    return claimed


async def unclaim_events(connection: AsyncConnection, inbox_ids: Sequence[int]) -> None:
    """Undo `claim_events` for turns that lost their race (they are run again)."""
    for start in range(0, len(inbox_ids), IN_LIST):
        await connection.execute(
            sa.update(inbox)
            .where(inbox.c.id.in_(inbox_ids[start : start + IN_LIST]))
            .values(processed_at=None, attempts=inbox.c.attempts - 1)
        )


def pending_of_user(
    channel: Channel | str | None, address: str
) -> tuple[sa.ColumnElement[bool], ...]:
    """A user's pending events: found among the pending rows (`ix_inbox_pending`), as the
    by-user index holds run events only (`schema.inbox`).

    `channel || ''` keeps the (channel, event_id) index out of the plan: without statistics
    SQLite would walk it for `channel = ?`, i.e. every event of the channel (concatenating an
    empty string is SQLite's documented way to rule an index out for a term)."""
    return inbox.c.processed_at.is_(None), *_of_user(channel, address)


def _of_user(channel: Channel | str | None, address: str) -> tuple[sa.ColumnElement[bool], ...]:
    i = inbox.c
    if channel is None:
        return (i.address == address,)
    return i.address == address, i.channel.concat("") == Channel(channel).value


def _record(rows: list[dict[str, Any]], connection: sa.Connection) -> dict[tuple[str, str], int]:
    """Insert the rows not seen before: their inbox ids by (channel, event_id).

    INSERT ... ON CONFLICT DO NOTHING RETURNING: only the rows inserted now come back, so the
    losers of a race, here or in another process, learn it without an error. On SQLite row by
    row on the driver (`sqlite_rows`); elsewhere SQLAlchemy sends the lot as multi-row
    statements, returned in no promised order."""
    recorded: dict[tuple[str, str], int] = {}
    each = insert_each(connection, _record_new(connection), rows)
    if each is None:
        for row in connection.execute(_record_new(connection), rows):
            recorded[(row.channel, row.event_id)] = row.id
    else:
        for returned in each:
            if returned is not None:
                inbox_id, channel, event_id = returned
                recorded[(channel, event_id)] = inbox_id
    if recorded:
        ring(connection)  # workers waiting for events wake at commit
    return recorded


def _new_event(key: tuple[str, str], new: NewEvent, received_at: datetime) -> dict[str, Any]:
    channel, event_id = key
    return {
        "channel": channel,
        "event_id": event_id,
        "address": new.address,
        "payload": dict(new.payload),
        "occurred_at": new.occurred_at,
        "received_at": received_at,
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
