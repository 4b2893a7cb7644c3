"""Free consultation slots from agents' weekly hours and exceptions, minus closed days, taken
slots, the lead time and the horizon. Pure: the caller passes the rules, bookings and `now`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from bot.booking.calendar import Closures
from bot.errors import BadInput
from bot.records import Rule

DAY_LABELS: Final = ("月", "火", "水", "木", "金", "土", "日")
EVENING: Final = time(18, 0)
"""A slot from this hour on is an evening slot: offered early, back-office workers are free then."""
FIRST_PAGE: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    agent_id: int
    agent_name: str
    starts_at: datetime  # aware, UTC
    ends_at: datetime

    @property
    def id(self) -> str:
        """Stable id carried by a button: the agent and the start, in UTC."""
        return f"{self.agent_id}@{self.starts_at.astimezone(UTC):%Y%m%dT%H%M}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotPolicy:
    minutes: int
    lead: timedelta
    horizon_days: int
    zone: ZoneInfo
    closures: Closures


def parse_slot_id(text: str) -> tuple[int, datetime]:
    """(agent id, start in UTC) from `Slot.id`; BadInput for anything else."""
    agent, _, moment = text.partition("@")
    try:
        return int(agent), datetime.strptime(moment, "%Y%m%dT%H%M").replace(tzinfo=UTC)
    except ValueError as error:
        raise BadInput(f"not a slot id: {text!r}") from error


def free_slots(
    rules: Iterable[Rule],
    agents: dict[int, str],
    taken: Iterable[tuple[int, datetime]],
    policy: SlotPolicy,
    now: datetime,
) -> list[Slot]:
    """Every free slot, earliest first; at one time, one slot (the agent with the lowest id
    who is free), since users choose a time, not a person."""
    busy = {(agent, moment.astimezone(UTC)) for agent, moment in taken}
    by_agent: dict[int, list[Rule]] = {}
    for rule in rules:
        if rule.agent_id in agents:
            by_agent.setdefault(rule.agent_id, []).append(rule)
    earliest = now + policy.lead
    today = now.astimezone(policy.zone).date()
    length = timedelta(minutes=policy.minutes)
    chosen: dict[datetime, Slot] = {}
    for ahead in range(policy.horizon_days + 1):
        day = today + timedelta(days=ahead)
        if policy.closures.is_closed(day):
            continue
        for agent_id in sorted(by_agent):
            for start, end in _open_spans(by_agent[agent_id], day):
                moment = datetime.combine(day, start, tzinfo=policy.zone)
                stop = datetime.combine(day, end, tzinfo=policy.zone)
                while moment + length <= stop:
                    utc = moment.astimezone(UTC)
                    if moment >= earliest and (agent_id, utc) not in busy and utc not in chosen:
                        chosen[utc] = Slot(
                            agent_id=agent_id,
                            agent_name=agents[agent_id],
                            starts_at=utc,
                            ends_at=utc + length,
                        )
                    moment += length
    return [chosen[k] for k in sorted(chosen)]


def spread(slots: Sequence[Slot], zone: ZoneInfo, *, first: int = FIRST_PAGE) -> list[Slot]:
    """The slots reordered so the first page holds the earliest slot, the earliest evening
    slot and the earliest weekend slot when agents offer them; the rest follow in time order."""
    if len(slots) <= first:
        return list(slots)
    picks: list[Slot] = [slots[0]]
    for wanted in (_is_evening, _is_weekend):
        found = next((s for s in slots if wanted(s, zone) and s not in picks), None)
        if found is not None and len(picks) < first:
            picks.append(found)
    for slot in slots:
        if len(picks) >= first:
            break
        if slot not in picks:
            picks.append(slot)
    picks.sort(key=lambda s: s.starts_at)
    return picks + [s for s in slots if s not in picks]


def label(moment: datetime, zone: ZoneInfo) -> str:
    """A slot as a button reads: 「12/8（火）19:00」 (within LINE's 20 characters)."""
    local = moment.astimezone(zone)
    return f"{local.month}/{local.day}（{DAY_LABELS[local.weekday()]}）{local:%H:%M}"


def long_label(moment: datetime, minutes: int, zone: ZoneInfo) -> str:
    """A booking as a confirmation reads: 「12月8日（火）19:00〜19:30」."""
    local = moment.astimezone(zone)
    end = local + timedelta(minutes=minutes)
    return (
        f"{local.month}月{local.day}日（{DAY_LABELS[local.weekday()]}）{local:%H:%M}〜{end:%H:%M}"
    )


def _open_spans(rules: list[Rule], day: date) -> list[tuple[time, time]]:
    """The agent's working spans on `day`: weekly hours (unless the whole day is off) and
    extra hours, with partial time off cut out."""
    offs = [r for r in rules if r.kind == "off" and r.day == day]
    if any(r.start is None for r in offs):
        return []
    spans = [
        (r.start, r.end)
        for r in rules
        if r.start is not None
        and r.end is not None
        and (
            (r.kind == "weekly" and r.weekday == day.weekday())
            or (r.kind == "extra" and r.day == day)
        )
    ]
    for off in offs:
        assert off.start is not None and off.end is not None
        spans = [piece for span in spans for piece in _cut(span, (off.start, off.end))]
    return sorted(spans)


def _cut(span: tuple[time, time], hole: tuple[time, time]) -> list[tuple[time, time]]:
    (start, end), (a, b) = span, hole
    if b <= start or a >= end:
        return [span]
    pieces = []
    if a > start:
        pieces.append((start, a))
    if b < end:
        pieces.append((b, end))
    return pieces


def _is_evening(slot: Slot, zone: ZoneInfo) -> bool:
    return slot.starts_at.astimezone(zone).time() >= EVENING


def _is_weekend(slot: Slot, zone: ZoneInfo) -> bool:
    return slot.starts_at.astimezone(zone).weekday() >= 5


_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_rule(agent_id: int, kind: str, day: str, hours: str = "") -> Rule:
    """A rule as people write it: ("weekly", "Mon", "18:00-21:00"), ("extra", "2026-12-26",
    "10:00-12:00"), ("off", "2026-12-24") or ("off", "2026-12-24", "12:00-13:00");
    BadInput saying what was expected otherwise."""
    if kind not in ("weekly", "extra", "off"):
        raise BadInput(f"{kind!r}: the kind is weekly, extra or off")
    start = end = None
    if hours:
        first, dash, last = hours.partition("-")
        try:
            if not dash:
                raise ValueError(hours)
            start, end = _clock(first), _clock(last)
        except ValueError as error:
            raise BadInput(f"{hours!r}: hours are like 18:00-21:00") from error
    if kind == "weekly":
        name = day.strip().lower()[:3]
        if name not in _WEEKDAYS:
            raise BadInput(f"{day!r}: weekly hours need a weekday (Mon..Sun)")
        return Rule(
            agent_id=agent_id, kind="weekly", weekday=_WEEKDAYS.index(name), start=start, end=end
        )
    try:
        on = date.fromisoformat(day.strip())
    except ValueError as error:
        raise BadInput(f"{day!r}: the day is like 2026-12-24") from error
    return Rule(agent_id=agent_id, kind=kind, day=on, start=start, end=end)  # type: ignore[arg-type]


def describe_rule(rule: Rule) -> str:
    """「毎週火 18:00-21:00」「2026-12-24 休み」: how a rule reads in the console and the CLI."""
    hours = f" {rule.start:%H:%M}-{rule.end:%H:%M}" if rule.start and rule.end else ""
    if rule.kind == "weekly" and rule.weekday is not None:
        return f"毎週{DAY_LABELS[rule.weekday]}{hours}"
    kind = "追加" if rule.kind == "extra" else "休み"
    return f"{rule.day} {kind}{hours}"


def _clock(text: str) -> time:
    hour, _, minute = text.strip().partition(":")
    return time(int(hour), int(minute or 0))
