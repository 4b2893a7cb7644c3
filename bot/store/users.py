"""Users' data rights: everything kept about one user (an export), deleting it all (forget),
and the audit log that records each, the only trace a deletion leaves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.models import ConversationKey
from bot.store.db import Database
from bot.store.inbox import pending_of_user
from bot.store.schema import (
    audit_log,
    bookings,
    contacts,
    conversations,
    facts,
    handoffs,
    inbox,
    messages,
    mode_changes,
    outbox,
)
from bot.store.tx import now_or


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    id: int
    at: datetime
    who: str
    action: str
    subject: str
    detail: dict[str, Any]


def subject_of(key: ConversationKey) -> str:
    """How the audit log names a user: the channel and a digest of the address, so the entry
    says whose data it was to whoever knows the address, and to nobody else."""
    digest = hashlib.sha256(key.address.encode()).hexdigest()[:16]
    return f"{key.channel.value}:sha256:{digest}"


class Users(Database):
    """Each method is one transaction, its audit entry included."""

    async def export_user(
        self, key: ConversationKey, *, who: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """Everything stored about the user at `key`, as JSON-ready data."""
        c = conversations.c
        async with self._begin() as connection:
            row = (
                await connection.execute(
                    sa.select(conversations).where(
                        c.channel == key.channel.value, c.address == key.address
                    )
                )
            ).one_or_none()
            document: dict[str, Any] = {
                "channel": key.channel.value,
                "address": key.address,
                "conversation": None,
                "inbox": await _inbox_rows(connection, key),
            }
            if row is not None:
                conversation_id = row.id
                document["conversation"] = {
                    **_json(row._mapping, skip=("id",)),
                    "transcript": await _rows(
                        connection,
                        sa.select(messages).where(messages.c.conversation_id == conversation_id),
                        ("conversation_id",),
                    ),
                    "handoffs": await _rows(
                        connection,
                        sa.select(handoffs).where(handoffs.c.conversation_id == conversation_id),
                        ("conversation_id",),
                    ),
                    "mode_changes": await _rows(
                        connection,
                        sa.select(mode_changes).where(
                            mode_changes.c.conversation_id == conversation_id
                        ),
                        ("conversation_id",),
                    ),
                    "contact": await _rows(
                        connection,
                        sa.select(contacts).where(contacts.c.conversation_id == conversation_id),
                        ("conversation_id",),
                    ),
                    "bookings": await _rows(
                        connection,
                        sa.select(bookings).where(bookings.c.conversation_id == conversation_id),
                        ("conversation_id", "token"),
                    ),
                    "outbox": await _rows(
                        connection,
                        sa.select(outbox).where(outbox.c.conversation_id == conversation_id),
                        ("conversation_id", "address", "reply_token"),
                    ),
                    "facts": await _rows(
                        connection,
                        sa.select(facts)
                        .where(facts.c.conversation_id == conversation_id)
                        .order_by(facts.c.id),
                        ("conversation_id",),
                    ),
                }
            counts = {
                "transcript": len(document["conversation"]["transcript"]) if row else 0,
                "inbox": len(document["inbox"]),
            }
            await _audit(connection, who=who, action="export", key=key, detail=counts, now=now)
        return document

    async def forget_user(
        self, key: ConversationKey, *, who: str, now: datetime | None = None
    ) -> dict[str, int]:
        """Delete the user's conversation with its transcript, handoffs, mode changes, contact
        details, bookings and undelivered replies (by cascade), and blank their inbox events (the rows stay, without
        payload or address, so a late redelivery is still known as seen). Returns the counts
        the audit entry records."""
        c = conversations.c
        async with self._begin() as connection:
            conversation_id = (
                await connection.execute(
                    sa.select(c.id).where(c.channel == key.channel.value, c.address == key.address)
                )
            ).scalar_one_or_none()
            lines = 0
            if conversation_id is not None:
                lines = (
                    await connection.execute(
                        sa.select(sa.func.count())
                        .select_from(messages)
                        .where(messages.c.conversation_id == conversation_id)
                    )
                ).scalar_one()
                await connection.execute(sa.delete(conversations).where(c.id == conversation_id))
            blanked = 0
            for where in _by_user(key):  # pending first: see `_by_user`
                result = await connection.execute(
                    sa.update(inbox).where(*where).values(payload=sa.null(), address="")
                )
                blanked += int(result.rowcount or 0)
            counts = {
                "conversations": 0 if conversation_id is None else 1,
                "transcript": int(lines),
                "inbox": blanked,
            }
            await _audit(connection, who=who, action="forget", key=key, detail=counts, now=now)
        return counts

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        async with self._begin() as connection:
            rows = await connection.execute(
                sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
            )
            return [AuditEntry(**row._mapping) for row in rows]


async def _inbox_rows(connection: AsyncConnection, key: ConversationKey) -> list[dict[str, Any]]:
    """The user's inbox events in the order recorded, each once (see `_by_user`)."""
    found: dict[int, dict[str, Any]] = {}
    for where in _by_user(key):
        for row in await connection.execute(sa.select(inbox).where(*where)):
            found.setdefault(row.id, _json(row._mapping, skip=("id", "address")))
    return [found[inbox_id] for inbox_id in sorted(found)]


def _by_user(key: ConversationKey) -> tuple[tuple[sa.ColumnElement[bool], ...], ...]:
    """The user's inbox rows as two sets, each found by an index: those pending (among the
    pending rows), then those run (by user); no index holds both (`schema.inbox`).

    Pending first: on PostgreSQL each statement sees the rows as committed when it starts, so
    an event a worker runs meanwhile has left the pending set before the second statement
    looks at the run ones, and is found there. In the other order it could be missed by both."""
    i = inbox.c
    run = (i.processed_at.is_not(None), i.channel == key.channel.value, i.address == key.address)
    return pending_of_user(key.channel, key.address), run


async def _rows(
    connection: AsyncConnection, query: sa.Select[Any], skip: tuple[str, ...]
) -> list[dict[str, Any]]:
    return [_json(row._mapping, skip=skip) for row in await connection.execute(query)]


def _json(row: Any, *, skip: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in row.items()
        if name not in skip
    }


async def _audit(
    connection: AsyncConnection,
    *,
    who: str,
    action: str,
    key: ConversationKey,
    detail: dict[str, int],
    now: datetime | None,
) -> None:
    await connection.execute(
        sa.insert(audit_log).values(
            at=now_or(now), who=who, action=action, subject=subject_of(key), detail=detail
        )
    )
