"""The booking desk: what booking steps need from the outside world (free slots, the user's
contact and open booking, as `Facts`), booking and cancelling in the store, the .ics file,
and telling agent surfaces (Slack card, console) about each booking change.

The service calls it between runs of the pure engine (`ConversationService._with_facts`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bot.booking.ics import booking_ics
from bot.booking.slots import (
    Slot,
    SlotPolicy,
    free_slots,
    label,
    long_label,
    parse_slot_id,
    spread,
)
from bot.core.ports import BookingSurface
from bot.errors import SlotTaken, UnknownBooking
from bot.models import (
    BookedView,
    BookingCancelled,
    BookingEffect,
    BookingRequested,
    ContactGiven,
    ContactView,
    Facts,
    Offer,
)
from bot.records import Booking, Contact
from bot.store import BookingStore

log = logging.getLogger(__name__)

MAX_OFFERS: Final = 30  # ten pages of 「ほかの日時」 is more than anyone reads
Method = Literal["line", "video", "phone"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BookingDesk:
    bookings: BookingStore
    policy: SlotPolicy
    method: Method
    meeting_url: str = ""
    public_url: str = ""
    policy_url: str = ""
    policy_version: str = "1"
    surfaces: Sequence[object] = ()  # those that are BookingSurfaces are told of changes
    clock: Callable[[], datetime] = _utcnow
    # Called with each booking made, moved or cancelled, after the surfaces (reminders).
    listeners: list[Callable[[Booking], Any]] = field(default_factory=list)
    # Called with a booking an agent cancelled (the user is told).
    agent_cancelled: list[Callable[[Booking], Any]] = field(default_factory=list)

    # ------------------------------------------------------------ facts for the engine

    async def facts(self, conversation_id: int | None) -> Facts:
        contact = booking = None
        if conversation_id is not None:
            contact = await self.bookings.contact(conversation_id)
            booking = await self.bookings.open_booking(conversation_id)
            if booking is not None and booking.ends_at <= self.clock():
                booking = None  # it took place: the user may book the next one
        return Facts(
            offers=await self.offers(),
            contact=self._contact_view(contact),
            booking=self.view(booking) if booking else None,
            policy_url=self.policy_url,
        )

    async def offers(self) -> tuple[Offer, ...]:
        shown = spread(await self._free(), self.policy.zone)[:MAX_OFFERS]
        return tuple(Offer(id=s.id, label=label(s.starts_at, self.policy.zone)) for s in shown)

    async def _free(self) -> list[Slot]:
        now = self.clock()
        until = now + timedelta(days=self.policy.horizon_days + 1)
        return free_slots(
            await self.bookings.rules(),
            await self.bookings.agent_names(),
            await self.bookings.taken(now, until),
            self.policy,
            now,
        )

    async def has_upcoming(self, conversation_id: int) -> bool:
        """Whether the conversation has a booking still to come (no follow-ups then)."""
        booking = await self.bookings.open_booking(conversation_id)
        return booking is not None and booking.starts_at > self.clock()

    # ------------------------------------------------------------ acting on effects

    async def book(self, conversation_id: int, request: BookingRequested, facts: Facts) -> Facts:
        """Book the slot the user picked; the facts to run the turn again with: the booking,
        or, when someone was faster, `taken` and fresh offers."""
        agent_id, starts_at = parse_slot_id(request.slot)
        previous = await self._get(request.replaces)
        held = (
            previous is not None and previous.status == "booked" and previous.starts_at == starts_at
        )
        if not held and request.slot not in {s.id for s in await self._free()}:
            # Booked by someone since the button was shown, or no longer offered (hours
            # changed, lead time passed): the same answer as a race lost in the database.
            return facts.model_copy(update={"taken": request.slot, "offers": await self.offers()})
        try:
            booking = await self.bookings.book(
                conversation_id,
                agent_id=agent_id,
                starts_at=starts_at,
                ends_at=starts_at + timedelta(minutes=self.policy.minutes),
                replaces=request.replaces,
                now=self.clock(),
            )
        except SlotTaken:
            log.info("a slot was taken by someone faster; offering others")
            return facts.model_copy(update={"taken": request.slot, "offers": await self.offers()})
        if previous is not None and previous.id != booking.id:
            await self._changed(await self.bookings.get(previous.id))
        await self._changed(booking)
        return facts.model_copy(update={"booking": self.view(booking), "taken": None})

    async def apply(self, conversation_id: int, effects: Sequence[BookingEffect]) -> None:
        """Contact details given, a booking cancelled: stored, and surfaces told."""
        for effect in effects:
            if isinstance(effect, ContactGiven):
                await self.bookings.save_contact(
                    conversation_id,
                    name=effect.name,
                    method=effect.method,
                    phone=effect.phone,
                    email=effect.email,
                    policy_version=self.policy_version,
                    now=self.clock(),
                )
            elif isinstance(effect, BookingCancelled):
                await self.cancel(effect.booking_id, conversation_id=conversation_id)

    async def cancel(self, booking_id: int, *, conversation_id: int | None = None) -> Booking:
        """Cancel an open booking: the user's own (`conversation_id` given, in chat), or, without
        it, by an agent (console, API), and then the user is told. UnknownBooking when there is
        no such booking; an agent cancelling one that is not open gets UnknownBooking too."""
        booking = await self.bookings.get(booking_id)
        if conversation_id is not None and booking.conversation_id != conversation_id:
            raise UnknownBooking(str(booking_id))
        try:
            booking = await self.bookings.cancel(booking_id, now=self.clock())
        except UnknownBooking:
            if conversation_id is None:
                raise
            return booking  # cancelled already (a retried turn): nothing more to tell
        await self._changed(booking)
        if conversation_id is None:
            for tell in self.agent_cancelled:
                try:
                    await tell(booking)
                except Exception:
                    log.exception("the user of booking %s could not be told", booking.id)
        return booking

    # ------------------------------------------------------------ views

    def view(self, booking: Booking) -> BookedView:
        slot = f"{booking.agent_id}@{booking.starts_at.astimezone(UTC):%Y%m%dT%H%M}"
        return BookedView(
            id=booking.id,
            slot=slot,
            when=self.when(booking),
            agent=booking.agent_name,
            method=self.method,
            url=self.meeting_url,
            ics_url=self.ics_url(booking),
        )

    def when(self, booking: Booking) -> str:
        minutes = int((booking.ends_at - booking.starts_at).total_seconds() // 60)
        return long_label(booking.starts_at, minutes, self.policy.zone)

    def ics_url(self, booking: Booking) -> str:
        if not self.public_url:
            return ""
        return f"{self.public_url.rstrip('/')}/bookings/{booking.token}.ics"

    async def ics(self, token: str) -> bytes:
        """The booking's calendar file; UnknownBooking for a token nobody was given."""
        if len(token) < 16:
            raise UnknownBooking("token")
        booking = await self.bookings.by_token(token)
        where = {"line": "LINE通話", "video": self.meeting_url or "ビデオ通話", "phone": "お電話"}
        return booking_ics(
            uid=f"booking-{booking.id}-{booking.token[:8]}@yarigai",
            starts_at=booking.starts_at,
            ends_at=booking.ends_at,
            summary=f"キャリア面談（担当: {booking.agent_name}）",
            description=f"{booking.agent_name}との無料キャリア面談です。",
            location=where[self.method],
            stamp=booking.created_at,
            cancelled=booking.status == "cancelled",
        )

    # ------------------------------------------------------------ helpers

    def _contact_view(self, contact: Contact | None) -> ContactView | None:
        # Consent to an older policy is no consent to this one: asked again.
        if contact is None or contact.policy_version != self.policy_version:
            return None
        return ContactView(
            name=contact.name, method=contact.method, phone=contact.phone, email=contact.email
        )

    async def _get(self, booking_id: int | None) -> Booking | None:
        if booking_id is None:
            return None
        try:
            return await self.bookings.get(booking_id)
        except UnknownBooking:
            return None

    async def _changed(self, booking: Booking) -> None:
        """Surfaces show the booking's new state; a failing surface is logged, never the
        user's problem (the booking stands)."""
        for surface in self.surfaces:
            if not isinstance(surface, BookingSurface):
                continue
            try:
                ref = await surface.booking_changed(booking, when=self.when(booking))
                if ref is not None:
                    await self.bookings.set_ref(booking.id, surface.surface_name, ref)
                    booking = await self.bookings.get(booking.id)
            except Exception:
                log.exception("an agent surface could not show booking %s", booking.id)
        for listener in self.listeners:
            try:
                await listener(booking)
            except Exception:
                log.exception("a booking listener failed for booking %s", booking.id)
