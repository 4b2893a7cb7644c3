"""`BookingStore`: agents' availability, users' contact details and bookings.

One slot, one booking: the partial unique index `uq_bookings_slot` decides two users racing
for a slot, whichever process serves them; the loser gets SlotTaken. Every method is one
transaction on the engine `SqlStore` uses.
"""

from __future__ import annotations

import secrets
from datetime import datetime, time
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import SlotTaken, StoreError, UnknownAgent, UnknownBooking
from bot.models import Channel, ConversationKey
from bot.records import Booking, Contact, Fact, Rule
from bot.store.facts import record_fact
from bot.store.schema import agents, availability, bookings, contacts, conversations
from bot.store.tx import begin, insert, now_or

Method = Literal["chat", "phone", "email"]


class BookingStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    # ------------------------------------------------------------ availability

    async def rules(self, agent: str | None = None) -> list[Rule]:
        """Availability of every enabled agent (or of one, by login name)."""
        query = sa.select(availability).join(agents, agents.c.id == availability.c.agent_id)
        query = query.where(agents.c.disabled.is_(False)).order_by(availability.c.id)
        if agent is not None:
            query = query.where(agents.c.name == agent)
        async with begin(self._engine) as connection:
            return [_rule(row) for row in (await connection.execute(query)).mappings()]

    async def rule_rows(self, agent: str) -> list[tuple[int, Rule]]:
        """One agent's rules with their ids (to remove one)."""
        query = (
            sa.select(availability)
            .join(agents, agents.c.id == availability.c.agent_id)
            .where(agents.c.name == agent)
            .order_by(availability.c.kind, availability.c.weekday, availability.c.day)
        )
        async with begin(self._engine) as connection:
            return [(row["id"], _rule(row)) for row in (await connection.execute(query)).mappings()]

    async def add_rule(self, agent: str, rule: Rule) -> int:
        async with begin(self._engine) as connection:
            agent_id = await _agent_id(connection, agent)
            return int(
                (
                    await connection.execute(
                        sa.insert(availability)
                        .values(
                            agent_id=agent_id,
                            kind=rule.kind,
                            weekday=rule.weekday,
                            day=rule.day,
                            start_time=_clock(rule.start),
                            end_time=_clock(rule.end),
                        )
                        .returning(availability.c.id)
                    )
                ).scalar_one()
            )

    async def remove_rule(self, agent: str, rule_id: int) -> bool:
        async with begin(self._engine) as connection:
            agent_id = await _agent_id(connection, agent)
            done = await connection.execute(
                sa.delete(availability).where(
                    availability.c.id == rule_id, availability.c.agent_id == agent_id
                )
            )
            return bool(done.rowcount)

    async def agent_names(self) -> dict[int, str]:
        """Enabled agents' display names by id (slots name the agent)."""
        async with begin(self._engine) as connection:
            rows = await connection.execute(
                sa.select(agents.c.id, agents.c.display_name).where(agents.c.disabled.is_(False))
            )
            return {row.id: row.display_name for row in rows}

    # ------------------------------------------------------------ contacts

    async def contact(self, conversation_id: int) -> Contact | None:
        async with begin(self._engine) as connection:
            row = (
                (
                    await connection.execute(
                        sa.select(contacts).where(contacts.c.conversation_id == conversation_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
        return None if row is None else Contact(**row)

    async def save_contact(
        self,
        conversation_id: int,
        *,
        name: str,
        method: Method,
        phone: str | None,
        email: str | None,
        policy_version: str,
        now: datetime | None = None,
    ) -> Contact:
        """Insert or replace the user's contact details with the consent just given."""
        now = now_or(now)
        values: dict[str, Any] = {
            "name": name,
            "method": method,
            "phone": phone,
            "email": email,
            "consent_at": now,
            "policy_version": policy_version,
            "updated_at": now,
        }
        async with begin(self._engine) as connection:
            statement = insert(connection, contacts).values(
                conversation_id=conversation_id, **values
            )
            await connection.execute(
                statement.on_conflict_do_update(index_elements=["conversation_id"], set_=values)
            )
        return Contact(conversation_id=conversation_id, **values)

    # ------------------------------------------------------------ bookings

    async def book(
        self,
        conversation_id: int,
        *,
        agent_id: int,
        starts_at: datetime,
        ends_at: datetime,
        replaces: int | None = None,
        now: datetime | None = None,
    ) -> Booking:
        """Book the slot; `replaces` (a reschedule) is cancelled in the same transaction, so
        a user never holds two slots nor loses the old one when the new one is taken.
        SlotTaken when someone else holds the slot. Asking again for the slot the
        conversation already holds returns that booking (a retried turn)."""
        now = now_or(now)
        b = bookings.c
        try:
            async with begin(self._engine) as connection:
                held = (
                    await connection.execute(
                        sa.select(b.id).where(
                            b.conversation_id == conversation_id,
                            b.agent_id == agent_id,
                            b.starts_at == starts_at,
                            b.status == "booked",
                        )
                    )
                ).scalar_one_or_none()
                if held is not None:
                    return await _booking(connection, held)
                # A booking whose time has passed is done: the user may book the next one.
                await connection.execute(
                    sa.update(bookings)
                    .where(
                        b.conversation_id == conversation_id,
                        b.status == "booked",
                        b.ends_at <= now,
                    )
                    .values(status="done")
                )
                if replaces is not None:
                    await connection.execute(
                        sa.update(bookings)
                        .where(
                            b.id == replaces,
                            b.conversation_id == conversation_id,
                            b.status == "booked",
                        )
                        .values(status="cancelled", cancelled_at=now)
                    )
                booking_id = (
                    await connection.execute(
                        sa.insert(bookings)
                        .values(
                            conversation_id=conversation_id,
                            agent_id=agent_id,
                            starts_at=starts_at,
                            ends_at=ends_at,
                            status="booked",
                            token=secrets.token_urlsafe(16),  # 128 random bits
                            created_at=now,
                            refs={},
                        )
                        .returning(b.id)
                    )
                ).scalar_one()
                if replaces is None:  # analytics: the funnel's booking step (a move is not one)
                    await record_fact(connection, conversation_id, Fact(kind="booking_made"), now)
                return await _booking(connection, booking_id)
        except StoreError as error:
            if isinstance(error.__cause__, IntegrityError):
                raise SlotTaken(f"agent {agent_id} at {starts_at.isoformat()}") from error
            raise

    async def cancel(self, booking_id: int, *, now: datetime | None = None) -> Booking:
        """Cancel an open booking; UnknownBooking when it is not open."""
        b = bookings.c
        async with begin(self._engine) as connection:
            done = await connection.execute(
                sa.update(bookings)
                .where(b.id == booking_id, b.status == "booked")
                .values(status="cancelled", cancelled_at=now_or(now))
            )
            if not done.rowcount:
                raise UnknownBooking(str(booking_id))
            return await _booking(connection, booking_id)

    async def open_booking(self, conversation_id: int) -> Booking | None:
        b = bookings.c
        async with begin(self._engine) as connection:
            found = (
                await connection.execute(
                    sa.select(b.id).where(
                        b.conversation_id == conversation_id, b.status == "booked"
                    )
                )
            ).scalar_one_or_none()
            return None if found is None else await _booking(connection, found)

    async def get(self, booking_id: int) -> Booking:
        async with begin(self._engine) as connection:
            return await _booking(connection, booking_id)

    async def by_token(self, token: str) -> Booking:
        async with begin(self._engine) as connection:
            found = (
                await connection.execute(sa.select(bookings.c.id).where(bookings.c.token == token))
            ).scalar_one_or_none()
            if found is None:
                raise UnknownBooking("token")
            return await _booking(connection, found)

    async def taken(self, since: datetime, until: datetime) -> list[tuple[int, datetime]]:
        """(agent, start) of the open bookings in a window: the slots not to offer."""
        b = bookings.c
        async with begin(self._engine) as connection:
            rows = await connection.execute(
                sa.select(b.agent_id, b.starts_at).where(
                    b.status == "booked", b.starts_at >= since, b.starts_at < until
                )
            )
            return [(row.agent_id, row.starts_at) for row in rows]

    async def between(
        self, since: datetime, until: datetime, *, agent: str | None = None
    ) -> list[Booking]:
        """Bookings (open and cancelled) starting in a window, earliest first."""
        b = bookings.c
        query = sa.select(b.id).where(b.starts_at >= since, b.starts_at < until)
        if agent is not None:
            query = query.join(agents, agents.c.id == b.agent_id).where(agents.c.name == agent)
        async with begin(self._engine) as connection:
            ids = (await connection.execute(query.order_by(b.starts_at, b.id))).scalars().all()
            return [await _booking(connection, i) for i in ids]

    async def set_ref(self, booking_id: int, surface: str, ref: dict[str, Any]) -> None:
        """Where a surface shows the booking (e.g. the Slack card's channel and ts)."""
        async with begin(self._engine) as connection:
            refs = (
                await connection.execute(
                    sa.select(bookings.c.refs).where(bookings.c.id == booking_id)
                )
            ).scalar_one()
            await connection.execute(
                sa.update(bookings)
                .where(bookings.c.id == booking_id)
                .values(refs={**refs, surface: ref})
            )


async def _agent_id(connection: Any, name: str) -> int:
    found = (
        await connection.execute(sa.select(agents.c.id).where(agents.c.name == name))
    ).scalar_one_or_none()
    if found is None:
        raise UnknownAgent(name)
    return int(found)


async def _booking(connection: Any, booking_id: int) -> Booking:
    b = bookings.c
    row = (
        (
            await connection.execute(
                sa.select(
                    bookings,
                    agents.c.display_name,
                    conversations.c.channel,
                    conversations.c.address,
                    contacts.c.name.label("contact_name"),
                    contacts.c.method.label("contact_method"),
                    contacts.c.phone.label("contact_phone"),
                    contacts.c.email.label("contact_email"),
                )
                .join(agents, agents.c.id == b.agent_id)
                .join(conversations, conversations.c.id == b.conversation_id)
                .outerjoin(contacts, contacts.c.conversation_id == b.conversation_id)
                .where(b.id == booking_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise UnknownBooking(str(booking_id))
    return Booking(
        id=row["id"],
        conversation_id=row["conversation_id"],
        key=ConversationKey(channel=Channel(row["channel"]), address=row["address"]),
        agent_id=row["agent_id"],
        agent_name=row["display_name"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        status=row["status"],
        token=row["token"],
        created_at=row["created_at"],
        cancelled_at=row["cancelled_at"],
        refs=dict(row["refs"] or {}),
        contact_name=row["contact_name"],
        contact=_how(row["contact_method"], row["contact_phone"], row["contact_email"]),
    )


def _how(method: str | None, phone: str | None, email: str | None) -> str | None:
    if method == "phone":
        return f"電話 {phone}"
    if method == "email":
        return f"メール {email}"
    return "このチャットで" if method == "chat" else None


def _rule(row: Any) -> Rule:
    return Rule(
        agent_id=row["agent_id"],
        kind=row["kind"],
        weekday=row["weekday"],
        day=row["day"],
        start=_time(row["start_time"]),
        end=_time(row["end_time"]),
    )


def _clock(moment: time | None) -> str | None:
    return None if moment is None else f"{moment:%H:%M}"


def _time(text: str | None) -> time | None:
    return None if text is None else time.fromisoformat(text)
