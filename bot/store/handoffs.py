"""`HandoffStore`: the handoff queue, claims, agent messages and the record of mode changes.

Every method is one transaction on the engine `SqlStore` uses (`store.engine`). The moves
that must not race (claim, release, cancel, an agent's message) are single conditional
UPDATEs: the database decides who wins, never a read followed by a write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import AlreadyClaimed, HandoffClosed, NotHolder, UnknownHandoff
from bot.models import Channel, ConversationKey, Mode, StoredMessage
from bot.records import Fact, Handoff, HandoffOutcome, HandoffStatus, ModeChange, SurfaceRef
from bot.store.facts import record_fact
from bot.store.schema import (
    OPEN_STATUSES,
    conversations,
    handoff_reads,
    handoff_refs,
    handoffs,
    messages,
    mode_changes,
)
from bot.store.tx import begin, insert, now_or

_OPEN_WHERE: Final = sa.text("status IN ('waiting', 'claimed')")


@dataclass(frozen=True, slots=True, kw_only=True)
class Orphan:
    """A conversation out of bot mode with no open handoff (a step failed half-way)."""

    conversation_id: int
    key: ConversationKey
    mode: Mode
    updated_at: datetime
    last_status: HandoffStatus | None
    last_closed_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """A queue row's extras: the user's last words, and whether this agent has read them."""

    last_user_text: str
    last_user_at: datetime | None
    unread: bool


class HandoffStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    # ------------------------------------------------------------ the queue

    async def open(
        self,
        conversation_id: int,
        *,
        reason: str,
        summary: dict[str, Any],
        who: str = "user",
        now: datetime | None = None,
    ) -> tuple[Handoff, bool]:
        """Queue a handoff for the conversation; True if new, False if one was open already."""
        now = now_or(now)
        h = handoffs.c
        async with begin(self._engine) as connection:
            created = (
                await connection.execute(
                    insert(connection, handoffs)
                    .values(
                        conversation_id=conversation_id,
                        status=HandoffStatus.WAITING.value,
                        reason=reason,
                        summary=summary,
                        requested_at=now,
                    )
                    .on_conflict_do_nothing(
                        index_elements=[h.conversation_id], index_where=_OPEN_WHERE
                    )
                    .returning(h.id)
                )
            ).scalar_one_or_none()
            if created is not None:
                await _record(
                    connection, conversation_id, created, Mode.BOT, Mode.WAITING, who, reason, now
                )
            found = await _one(
                connection, h.conversation_id == conversation_id, h.status.in_(OPEN_STATUSES)
            )
        if found is None:  # closed between our insert and read: only a racing cancel does that
            raise HandoffClosed(created or 0, status="cancelled")
        return found, created is not None

    async def get(self, handoff_id: int) -> Handoff:
        async with begin(self._engine) as connection:
            found = await _one(connection, handoffs.c.id == handoff_id)
        if found is None:
            raise UnknownHandoff(handoff_id)
        return found

    async def open_for(self, conversation_id: int) -> Handoff | None:
        """The conversation's waiting or claimed handoff, if any."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            return await _one(
                connection, h.conversation_id == conversation_id, h.status.in_(OPEN_STATUSES)
            )

    async def queue(
        self,
        *,
        statuses: Sequence[HandoffStatus] = (HandoffStatus.WAITING, HandoffStatus.CLAIMED),
        limit: int = 200,
    ) -> list[Handoff]:
        """Handoffs in these statuses, longest waiting first."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            return await _many(
                connection,
                [h.status.in_([s.value for s in statuses])],
                order=(h.requested_at, h.id),
                limit=limit,
            )

    async def history(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent: str | None = None,
        outcome: HandoffOutcome | Literal["none"] | None = None,
        limit: int = 100,
    ) -> list[Handoff]:
        """Released and cancelled handoffs, newest first: closed in [since, until), held by
        `agent`, ended with `outcome` ("none": released without one, or cancelled)."""
        h = handoffs.c
        where: list[sa.ColumnElement[bool]] = [
            h.status.in_([HandoffStatus.RELEASED.value, HandoffStatus.CANCELLED.value])
        ]
        if since is not None:
            where.append(h.closed_at >= since)
        if until is not None:
            where.append(h.closed_at < until)
        if agent:
            where.append(h.agent == agent)
        if outcome == "none":
            where.append(h.outcome.is_(None))
        elif outcome is not None:
            where.append(h.outcome == outcome.value)
        async with begin(self._engine) as connection:
            return await _many(
                connection, where, order=(h.closed_at.desc(), h.id.desc()), limit=limit
            )

    async def agents_seen(self) -> list[tuple[str, str]]:
        """Every (agent, agent_name) that has held a handoff, for the history's filter."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            rows = (
                await connection.execute(
                    sa.select(h.agent, sa.func.max(h.agent_name))
                    .where(h.agent.is_not(None))
                    .group_by(h.agent)
                    .order_by(h.agent)
                )
            ).all()
        return [(str(r[0]), str(r[1] or r[0])) for r in rows]

    async def for_conversation(self, conversation_id: int, *, limit: int = 20) -> list[Handoff]:
        """The conversation's handoffs, newest first."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            return await _many(
                connection,
                [h.conversation_id == conversation_id],
                order=(h.id.desc(),),
                limit=limit,
            )

    # ------------------------------------------------------------ moves

    async def claim(
        self, handoff_id: int, *, agent: str, agent_name: str, now: datetime | None = None
    ) -> Handoff:
        """Take a waiting handoff. Exactly one of several concurrent claims wins; the others
        get AlreadyClaimed naming the winner. Claiming again what one holds is a no-op."""
        now = now_or(now)
        h = handoffs.c
        async with begin(self._engine) as connection:
            # On PostgreSQL a second UPDATE waits for the first's row lock, then re-checks
            # `status = 'waiting'` against the committed row and matches nothing; on SQLite
            # writers are serialised. Either way the loser's UPDATE returns no row.
            won = (
                await connection.execute(
                    sa.update(handoffs)
                    .where(h.id == handoff_id, h.status == HandoffStatus.WAITING.value)
                    .values(
                        status=HandoffStatus.CLAIMED.value,
                        agent=agent,
                        agent_name=agent_name,
                        claimed_at=now,
                    )
                    .returning(h.conversation_id)
                )
            ).scalar_one_or_none()
            if won is not None:
                await _set_mode(connection, won, Mode.AGENT, agent, now)
                await _record(
                    connection, won, handoff_id, Mode.WAITING, Mode.AGENT, agent, "対応開始", now
                )
                await record_fact(connection, won, Fact(kind="handoff_claimed"), now)
            found = await _one(connection, h.id == handoff_id)
        if found is None:
            raise UnknownHandoff(handoff_id)
        if found.status is HandoffStatus.CLAIMED and found.agent == agent:
            return found
        if found.status is HandoffStatus.CLAIMED:
            raise AlreadyClaimed(
                handoff_id, agent=found.agent or "", agent_name=found.agent_name or ""
            )
        raise HandoffClosed(handoff_id, status=found.status.value)

    async def release(
        self,
        handoff_id: int,
        *,
        agent: str,
        outcome: HandoffOutcome | None = None,
        why: str = "対応終了",
        now: datetime | None = None,
    ) -> Handoff:
        """Close a claimed handoff with how it ended; only its holder may. The conversation
        stays in agent mode until the bot's resume turn switches it back, so the user is never
        left between."""
        now = now_or(now)
        h = handoffs.c
        async with begin(self._engine) as connection:
            closed = (
                await connection.execute(
                    sa.update(handoffs)
                    .where(
                        h.id == handoff_id,
                        h.status == HandoffStatus.CLAIMED.value,
                        h.agent == agent,
                    )
                    .values(
                        status=HandoffStatus.RELEASED.value,
                        closed_at=now,
                        outcome=outcome.value if outcome else None,
                    )
                    .returning(h.conversation_id)
                )
            ).scalar_one_or_none()
            if closed is not None:
                if outcome is not None:
                    why = f"{why}（{outcome.label}）"
                await _record(connection, closed, handoff_id, Mode.AGENT, Mode.BOT, agent, why, now)
                released = Fact(kind="handoff_released", value=outcome.value if outcome else None)
                await record_fact(connection, closed, released, now)
            found = await _one(connection, h.id == handoff_id)
        if found is None:
            raise UnknownHandoff(handoff_id)
        if closed is not None:
            return found
        if found.status.open:
            raise NotHolder(handoff_id, agent=agent)
        raise HandoffClosed(handoff_id, status=found.status.value)

    async def cancel(
        self,
        conversation_id: int,
        *,
        who: str = "user",
        why: str = "ユーザーがボットに戻った",
        now: datetime | None = None,
    ) -> Handoff | None:
        """Withdraw the conversation's waiting handoff. None: nothing was open. AlreadyClaimed:
        an agent took it first (the user's words then go to that agent)."""
        now = now_or(now)
        h = handoffs.c
        async with begin(self._engine) as connection:
            cancelled = (
                await connection.execute(
                    sa.update(handoffs)
                    .where(
                        h.conversation_id == conversation_id,
                        h.status == HandoffStatus.WAITING.value,
                    )
                    .values(status=HandoffStatus.CANCELLED.value, closed_at=now)
                    .returning(h.id)
                )
            ).scalar_one_or_none()
            if cancelled is not None:
                await _record(
                    connection, conversation_id, cancelled, Mode.WAITING, Mode.BOT, who, why, now
                )
                # Touched so a repair after a crash can tell "cancelled, resume pending" (see
                # `orphans`) from a later request whose handoff was never opened.
                await connection.execute(
                    sa.update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(updated_at=now)
                )
                return await _one(connection, h.id == cancelled)
            held = await _one(
                connection,
                h.conversation_id == conversation_id,
                h.status == HandoffStatus.CLAIMED.value,
            )
        if held is not None:
            raise AlreadyClaimed(held.id, agent=held.agent or "", agent_name=held.agent_name or "")
        return None

    async def record(
        self,
        conversation_id: int,
        *,
        from_mode: Mode,
        to_mode: Mode,
        who: str,
        why: str,
        handoff_id: int | None = None,
        now: datetime | None = None,
    ) -> None:
        """Record a mode change made elsewhere (e.g. a repair)."""
        async with begin(self._engine) as connection:
            await _record(
                connection, conversation_id, handoff_id, from_mode, to_mode, who, why, now_or(now)
            )

    async def mode_changes(self, conversation_id: int) -> list[ModeChange]:
        m = mode_changes.c
        async with begin(self._engine) as connection:
            rows = (
                await connection.execute(
                    sa.select(mode_changes)
                    .where(m.conversation_id == conversation_id)
                    .order_by(m.id)
                )
            ).all()
        return [
            ModeChange(
                conversation_id=r.conversation_id,
                handoff_id=r.handoff_id,
                from_mode=Mode(r.from_mode),
                to_mode=Mode(r.to_mode),
                who=r.who,
                why=r.why,
                at=r.at,
            )
            for r in rows
        ]

    # ------------------------------------------------------------ transcript

    async def add_message(
        self,
        handoff_id: int,
        *,
        agent: str,
        text: str,
        body: dict[str, Any],
        note: bool = False,
        now: datetime | None = None,
    ) -> StoredMessage:
        """Append an agent's message (only by the holder of a claimed handoff) or an internal
        note (any agent, any time) to the conversation's transcript."""
        now = now_or(now)
        h = handoffs.c
        async with begin(self._engine) as connection:
            if note:
                conversation_id = (
                    await connection.execute(sa.select(h.conversation_id).where(h.id == handoff_id))
                ).scalar_one_or_none()
            else:
                # A no-op UPDATE rather than a SELECT: it locks the row, so a release cannot
                # slip in between the holder check and the insert.
                conversation_id = (
                    await connection.execute(
                        sa.update(handoffs)
                        .where(
                            h.id == handoff_id,
                            h.status == HandoffStatus.CLAIMED.value,
                            h.agent == agent,
                        )
                        .values(agent=h.agent)
                        .returning(h.conversation_id)
                    )
                ).scalar_one_or_none()
            if conversation_id is not None:
                return await _append(
                    connection,
                    conversation_id,
                    sender="note" if note else "agent",
                    text=text,
                    body=body,
                    now=now,
                )
            found = await _one(connection, h.id == handoff_id)
        if found is None:
            raise UnknownHandoff(handoff_id)
        if found.status.open:
            raise NotHolder(handoff_id, agent=agent)
        raise HandoffClosed(handoff_id, status=found.status.value)

    async def add_bot_message(
        self, conversation_id: int, *, text: str, body: dict[str, Any], now: datetime | None = None
    ) -> StoredMessage:
        """Append something the bot says outside a turn (e.g. the timeout notice)."""
        async with begin(self._engine) as connection:
            return await _append(
                connection, conversation_id, sender="bot", text=text, body=body, now=now_or(now)
            )

    # ------------------------------------------------------------ timeouts and repairs

    async def waiting_unnotified(self) -> list[Handoff]:
        """Waiting handoffs whose user has not been told about a timeout yet."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            return await _many(
                connection,
                [h.status == HandoffStatus.WAITING.value, h.timeout_notified_at.is_(None)],
                order=(h.requested_at, h.id),
                limit=1000,
            )

    async def mark_timeout_notified(self, handoff_id: int, *, now: datetime | None = None) -> bool:
        """Claim the right to tell the user once; False if someone did, or it is no longer
        waiting (so two processes never both send the notice)."""
        h = handoffs.c
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(handoffs)
                .where(
                    h.id == handoff_id,
                    h.status == HandoffStatus.WAITING.value,
                    h.timeout_notified_at.is_(None),
                )
                .values(timeout_notified_at=now_or(now))
                .returning(h.id)
            )
            return result.scalar_one_or_none() is not None

    async def orphans(self, *, older_than: datetime) -> list[Orphan]:
        """Conversations out of bot mode, untouched since `older_than`, with no open handoff."""
        c, h = conversations.c, handoffs.c
        last = (
            sa.select(h.status, h.closed_at)
            .where(h.conversation_id == c.id)
            .order_by(h.id.desc())
            .limit(1)
            .correlate(conversations)
        )
        open_exists = sa.exists().where(h.conversation_id == c.id, h.status.in_(OPEN_STATUSES))
        query = sa.select(
            c.id,
            c.channel,
            c.address,
            c.mode,
            c.updated_at,
            last.with_only_columns(h.status).scalar_subquery().label("last_status"),
            last.with_only_columns(h.closed_at).scalar_subquery().label("last_closed_at"),
        ).where(c.mode != Mode.BOT.value, c.updated_at < older_than, ~open_exists)
        async with begin(self._engine) as connection:
            rows = (await connection.execute(query)).all()
        return [
            Orphan(
                conversation_id=r.id,
                key=ConversationKey(channel=Channel(r.channel), address=r.address),
                mode=Mode(r.mode),
                updated_at=r.updated_at,
                last_status=HandoffStatus(r.last_status) if r.last_status else None,
                last_closed_at=r.last_closed_at,
            )
            for r in rows
        ]

    # ------------------------------------------------------------ what agents have read

    async def previews(self, handoff_ids: Sequence[int], *, agent: str) -> dict[int, Preview]:
        """For each handoff: the user's last message and whether `agent` has read up to it."""
        if not handoff_ids:
            return {}
        h, m, r = handoffs.c, messages.c, handoff_reads.c
        last_user = (
            sa.select(sa.func.max(m.id))
            .where(m.conversation_id == h.conversation_id, m.sender == "user")
            .correlate(handoffs)
            .scalar_subquery()
        )
        read = (
            sa.select(r.message_id)
            .where(r.handoff_id == h.id, r.agent == agent)
            .correlate(handoffs)
            .scalar_subquery()
        )
        query = sa.select(h.id, last_user.label("last_user"), read.label("read")).where(
            h.id.in_(list(handoff_ids))
        )
        async with begin(self._engine) as connection:
            rows = (await connection.execute(query)).all()
            ids = [row.last_user for row in rows if row.last_user is not None]
            texts = (
                {
                    line.id: (line.text, line.created_at)
                    for line in (
                        await connection.execute(
                            sa.select(m.id, m.text, m.created_at).where(m.id.in_(ids))
                        )
                    ).all()
                }
                if ids
                else {}
            )
        found = {}
        for row in rows:
            text, at = texts.get(row.last_user, ("", None))
            found[row.id] = Preview(
                last_user_text=text,
                last_user_at=at,
                unread=row.last_user is not None and (row.read or 0) < row.last_user,
            )
        return found

    async def mark_read(self, handoff_id: int, *, agent: str, message_id: int) -> None:
        """`agent` has seen the handoff's transcript up to `message_id` (never moves back)."""
        r = handoff_reads.c
        async with begin(self._engine) as connection:
            statement = insert(connection, handoff_reads).values(
                handoff_id=handoff_id, agent=agent, message_id=message_id
            )
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[r.handoff_id, r.agent],
                    set_={"message_id": sa.func.max(r.message_id, statement.excluded.message_id)}
                    if connection.dialect.name == "sqlite"
                    else {
                        "message_id": sa.func.greatest(r.message_id, statement.excluded.message_id)
                    },
                )
            )

    # ------------------------------------------------------------ surfaces

    async def set_ref(
        self, handoff_id: int, *, surface: str, ref: str, data: dict[str, Any] | None = None
    ) -> None:
        """Remember where the handoff shows on a surface (replacing that surface's earlier ref)."""
        r = handoff_refs.c
        async with begin(self._engine) as connection:
            await connection.execute(
                insert(connection, handoff_refs)
                .values(handoff_id=handoff_id, surface=surface, ref=ref, data=data or {})
                .on_conflict_do_update(
                    index_elements=[r.handoff_id, r.surface],
                    set_={"ref": ref, "data": data or {}},
                )
            )

    async def by_ref(self, *, surface: str, ref: str) -> Handoff | None:
        """The handoff a surface knows by `ref` (e.g. the Slack thread a reply came in)."""
        r = handoff_refs.c
        async with begin(self._engine) as connection:
            handoff_id = (
                await connection.execute(
                    sa.select(r.handoff_id).where(r.surface == surface, r.ref == ref)
                )
            ).scalar_one_or_none()
            if handoff_id is None:
                return None
            return await _one(connection, handoffs.c.id == handoff_id)


# ---------------------------------------------------------------- private


def _select() -> sa.Select[Any]:
    return sa.select(handoffs, conversations.c.channel, conversations.c.address).join(
        conversations, conversations.c.id == handoffs.c.conversation_id
    )


async def _one(connection: AsyncConnection, *where: sa.ColumnElement[bool]) -> Handoff | None:
    found = await _many(connection, list(where), order=(handoffs.c.id.desc(),), limit=1)
    return found[0] if found else None


async def _many(
    connection: AsyncConnection,
    where: list[sa.ColumnElement[bool]],
    *,
    order: tuple[Any, ...],
    limit: int,
) -> list[Handoff]:
    rows = (await connection.execute(_select().where(*where).order_by(*order).limit(limit))).all()
    if not rows:
        return []
    r = handoff_refs.c
    refs: dict[int, list[SurfaceRef]] = {}
    ref_rows = await connection.execute(
        sa.select(handoff_refs).where(r.handoff_id.in_([row.id for row in rows]))
    )
    for ref in ref_rows:
        refs.setdefault(ref.handoff_id, []).append(
            SurfaceRef(surface=ref.surface, ref=ref.ref, data=ref.data)
        )
    return [_handoff(row._mapping, tuple(refs.get(row.id, ()))) for row in rows]


def _handoff(row: sa.RowMapping, refs: tuple[SurfaceRef, ...]) -> Handoff:
    return Handoff(
        id=row["id"],
        conversation_id=row["conversation_id"],
        key=ConversationKey(channel=Channel(row["channel"]), address=row["address"]),
        status=HandoffStatus(row["status"]),
        reason=row["reason"],
        summary=row["summary"],
        requested_at=row["requested_at"],
        claimed_at=row["claimed_at"],
        agent=row["agent"],
        agent_name=row["agent_name"],
        closed_at=row["closed_at"],
        timeout_notified_at=row["timeout_notified_at"],
        outcome=HandoffOutcome(row["outcome"]) if row["outcome"] else None,
        refs=refs,
    )


async def _set_mode(
    connection: AsyncConnection, conversation_id: int, mode: Mode, agent: str | None, now: datetime
) -> None:
    c = conversations.c
    # The version bump makes a turn in flight conflict and re-run under the new mode.
    await connection.execute(
        sa.update(conversations)
        .where(c.id == conversation_id)
        .values(mode=mode.value, agent=agent, version=c.version + 1, updated_at=now)
    )


async def _record(
    connection: AsyncConnection,
    conversation_id: int,
    handoff_id: int | None,
    from_mode: Mode,
    to_mode: Mode,
    who: str,
    why: str,
    now: datetime,
) -> None:
    await connection.execute(
        sa.insert(mode_changes).values(
            conversation_id=conversation_id,
            handoff_id=handoff_id,
            from_mode=from_mode.value,
            to_mode=to_mode.value,
            who=who,
            why=why,
            at=now,
        )
    )


async def _append(
    connection: AsyncConnection,
    conversation_id: int,
    *,
    sender: str,
    text: str,
    body: dict[str, Any],
    now: datetime,
) -> StoredMessage:
    m = messages.c
    row = (
        await connection.execute(
            sa.insert(messages)
            .values(
                conversation_id=conversation_id,
                direction="out",
                sender=sender,
                text=text,
                body=body,
                created_at=now,
            )
            .returning(m.id, m.direction, m.sender, m.text, m.body, m.created_at)
        )
    ).one()
    return StoredMessage.model_validate(row._asdict())
