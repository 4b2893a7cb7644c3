"""Durable timers: scheduled by key, cancelled by key or key prefix, found when due, and
settled exactly once (by the turn they cause, in its own transaction, or by `settle_timer`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.records import Timer
from bot.store.db import Database
from bot.store.schema import timers
from bot.store.tx import IN_LIST, insert, now_or

_OUTCOME_CHARS = 64


class Timers(Database):
    """Each method is one transaction."""

    async def schedule_timer(
        self,
        key: str,
        *,
        kind: str,
        due_at: datetime,
        conversation_id: int | None = None,
        payload: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Timer:
        """Arm the timer named `key`: a new one, or the same one again with this due time,
        kind and payload (scheduling twice is one timer; a fired or cancelled one is armed
        anew)."""
        row = timer_row(
            key,
            kind=kind,
            conversation_id=conversation_id,
            due_at=due_at,
            payload=payload or {},
            now=now_or(now),
        )
        async with self._begin() as connection:
            [armed] = await arm_timers(connection, [row])
        return armed

    async def cancel_timer(self, key: str, *, now: datetime | None = None) -> bool:
        """Cancel the pending timer named `key`; False when there is none (fired, cancelled
        or never scheduled)."""
        async with self._begin() as connection:
            result = await connection.execute(
                _cancel(now_or(now)).where(timers.c.key == key).returning(timers.c.id)
            )
            return result.first() is not None

    async def cancel_timers(self, prefix: str, *, now: datetime | None = None) -> int:
        """Cancel every pending timer whose key starts with `prefix` (e.g. all of one
        booking's reminders); how many."""
        if not prefix:
            raise ValueError("cancel_timers needs a key prefix (refusing to cancel every timer)")
        async with self._begin() as connection:
            result = await connection.execute(
                _cancel(now_or(now))
                .where(timers.c.key.startswith(prefix, autoescape=True))
                .returning(timers.c.id)
            )
            return len(result.all())

    async def timer(self, key: str) -> Timer | None:
        async with self._read() as connection:
            row = (
                await connection.execute(sa.select(timers).where(timers.c.key == key))
            ).one_or_none()
        return None if row is None else _timer(row._mapping)

    async def timers_of(self, conversation_id: int) -> list[Timer]:
        """A conversation's timers, pending or not, by due time."""
        async with self._read() as connection:
            rows = await connection.execute(
                sa.select(timers)
                .where(timers.c.conversation_id == conversation_id)
                .order_by(timers.c.due_at, timers.c.id)
            )
            return [_timer(row._mapping) for row in rows]

    async def due_timers(self, now: datetime, *, limit: int = 100) -> list[Timer]:
        """Pending timers due at `now`, earliest first. Finding one claims nothing: it is
        settled by the turn it causes (`TurnWrite.timer`) or by `settle_timer`."""
        async with self._read() as connection:
            rows = await connection.execute(
                sa.select(timers)
                .where(*_pending(), timers.c.due_at <= now)
                .order_by(timers.c.due_at, timers.c.id)
                .limit(limit)
            )
            return [_timer(row._mapping) for row in rows]

    async def next_due(self) -> datetime | None:
        """When the earliest pending timer is due."""
        async with self._read() as connection:
            due: datetime | None = await connection.scalar(
                sa.select(sa.func.min(timers.c.due_at)).where(*_pending())
            )
        return due

    async def settle_timer(
        self, timer: Timer, outcome: str, *, now: datetime | None = None
    ) -> bool:
        """Mark `timer` fired with `outcome`, as it was found (not rescheduled or cancelled
        since); False when someone settled, cancelled or rescheduled it first."""
        async with self._begin() as connection:
            return bool(await claim_timers(connection, [timer], now_or(now), outcome=outcome))

    async def postpone_timer(self, timer: Timer, until: datetime) -> bool:
        """Move `timer` (as it was found) to `until`; False when it changed meanwhile."""
        async with self._begin() as connection:
            result = await connection.execute(
                sa.update(timers)
                .where(timers.c.id == timer.id, timers.c.due_at == timer.due_at, *_pending())
                .values(due_at=until)
                .returning(timers.c.id)
            )
            return result.first() is not None

    async def timer_failed(self, timer: Timer, error: str, *, retry_at: datetime | None) -> None:
        """A handler failed: try again at `retry_at`, or give up (None)."""
        values: dict[str, Any] = {
            "attempts": timers.c.attempts + 1,
            "last_error": error[:1000],
        }
        if retry_at is None:
            values |= {"fired_at": now_or(None), "outcome": "failed"}
        else:
            values["due_at"] = retry_at
        async with self._begin() as connection:
            await connection.execute(
                sa.update(timers)
                .where(timers.c.id == timer.id, timers.c.due_at == timer.due_at, *_pending())
                .values(**values)
            )


def timer_row(
    key: str,
    *,
    kind: str,
    conversation_id: int | None,
    due_at: datetime,
    payload: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind,
        "conversation_id": conversation_id,
        "due_at": due_at,
        "payload": payload,
        "created_at": now,
        "attempts": 0,
    }


async def arm_timers(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[Timer]:
    """Insert these timers, or arm the existing ones of the same keys anew (`timer_row`)."""
    armed: list[Timer] = []
    for row in sorted(rows, key=lambda r: str(r["key"])):  # key order: locks alike
        upsert = insert(connection, timers).values(row)
        statement = upsert.on_conflict_do_update(
            index_elements=[timers.c.key],
            set_={
                "kind": upsert.excluded.kind,
                "conversation_id": upsert.excluded.conversation_id,
                "due_at": upsert.excluded.due_at,
                "payload": upsert.excluded.payload,
                "fired_at": None,
                "cancelled_at": None,
                "outcome": None,
                "attempts": 0,
                "last_error": None,
            },
        ).returning(*timers.c)
        armed.append(_timer((await connection.execute(statement)).one()._mapping))
    return armed


async def claim_timers(
    connection: AsyncConnection,
    claimed: Sequence[Timer],
    now: datetime,
    *,
    outcome: str = "sent",
) -> set[int]:
    """Mark these timers fired where they are still pending at the due time they were found
    with; the ids this transaction marked (one UPDATE each: few fire at once)."""
    marked: set[int] = set()
    for timer in sorted(claimed, key=lambda t: t.id)[:IN_LIST]:  # id order: locks alike
        row = await connection.execute(
            sa.update(timers)
            .where(timers.c.id == timer.id, timers.c.due_at == timer.due_at, *_pending())
            .values(fired_at=now, outcome=outcome[:_OUTCOME_CHARS], attempts=timers.c.attempts + 1)
            .returning(timers.c.id)
        )
        marked.update(row.scalars())
    return marked


async def unclaim_timers(connection: AsyncConnection, timer_ids: Sequence[int]) -> None:
    """Undo `claim_timers` for turns that lost their race (they are run again)."""
    for start in range(0, len(timer_ids), IN_LIST):
        await connection.execute(
            sa.update(timers)
            .where(timers.c.id.in_(timer_ids[start : start + IN_LIST]))
            .values(fired_at=None, outcome=None, attempts=timers.c.attempts - 1)
        )


def _pending() -> tuple[sa.ColumnElement[bool], ...]:
    return (timers.c.fired_at.is_(None), timers.c.cancelled_at.is_(None))


def _cancel(now: datetime) -> sa.Update:
    return sa.update(timers).where(*_pending()).values(cancelled_at=now)


def _timer(row: sa.RowMapping) -> Timer:
    return Timer(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        conversation_id=row["conversation_id"],
        due_at=row["due_at"],
        payload=row["payload"] or {},
        created_at=row["created_at"],
        fired_at=row["fired_at"],
        cancelled_at=row["cancelled_at"],
        outcome=row["outcome"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )
