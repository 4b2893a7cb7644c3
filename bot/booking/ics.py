"""The booking as an iCalendar file (icalendar), for the link in the confirmation."""

from __future__ import annotations

from datetime import datetime

from icalendar import Calendar, Event


def booking_ics(
    *,
    uid: str,
    starts_at: datetime,
    ends_at: datetime,
    summary: str,
    description: str,
    location: str,
    stamp: datetime,
    cancelled: bool = False,
) -> bytes:
    """One VEVENT; a cancelled booking is sent as STATUS:CANCELLED so calendars drop it."""
    calendar = Calendar()
    calendar.add("prodid", "-//yarigai//booking//JA")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp)
    event.add("dtstart", starts_at)
    event.add("dtend", ends_at)
    event.add("summary", summary)
    event.add("description", description)
    if location:
        event.add("location", location)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    calendar.add_component(event)
    return bytes(calendar.to_ical())
