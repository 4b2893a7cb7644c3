"""Seeded runs of the career flow with known answers, written as the bot writes them (a
conversation row and its facts), for the insights queries, page and CSV tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.facts import RETURNED, add_counts
from bot.store.schema import conversations, facts

# The deepest of the flow's own steps each run reached (0 started … 5 summary), and whether it
# asked for an agent and talked to one, per variant. Known totals (a + b):
#   started 20, role 19, frustrations 18, fit 15, advice 14, summary 11, asked 6, talked 4.
REACH: Final = {
    "a": [0, 1, 2, 2, 3, 4, 4, 5, 5, 5],
    "b": [2, 4, 5, 5, 5, 5, 5, 5, 5, 5],
}
ASKED: Final = {"a": {7, 8}, "b": {4, 5, 6, 7}}
TALKED: Final = {"a": {7}, "b": {4, 5, 6}}
OUTCOMES: Final = ["booked", "info_only", "booked", "follow_up"]  # as the agents tagged them
ROLES: Final = ["keiri", "jinji", "soumu", "jimu"]
FITS: Final = ["good", "mixed", "low"]
DIRECTIONS: Final = ["stay", "change", "unsure"]
# Where a run that stopped there sat (abandoned): after step n it waits at QUESTION[n].
WAITS_AT: Final = ["ask_role", "ask_frustrations", "fit_start", "ask_direction", "ways"]
FIT_QUESTIONS: Final = [
    "fit_start",
    "q_support",
    "q_change",
    "q_steady",
    "q_ideas",
    "q_rules",
    "q_thanks",
    "q_pillar",
]


@dataclass(frozen=True, slots=True)
class Run:
    index: int  # 0..19 over both variants
    variant: str
    reach: int
    asked: bool
    talked: bool

    @property
    def role(self) -> str:
        return ROLES[self.index % 4]

    @property
    def frustrations(self) -> str:
        return "repetitive,growth" if self.index % 2 == 0 else "invisible"

    @property
    def fit(self) -> str:
        return FITS[self.index % 3]

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.index % 3]

    @property
    def role_typed(self) -> bool:
        return self.index % 5 == 0

    @property
    def role_missed(self) -> bool:
        return self.index % 4 == 0


def runs() -> list[Run]:
    found = []
    for variant in ("a", "b"):
        for i, reach in enumerate(REACH[variant]):
            index = len(found)
            found.append(Run(index, variant, reach, i in ASKED[variant], i in TALKED[variant]))
    return found


async def seed(engine: AsyncEngine, *, now: datetime | None = None) -> datetime:
    """Write the runs (begun over the last week) and one old run (60 days ago) that no
    period of the last 30 days may count; returns the `now` used."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    async with engine.begin() as connection:
        for run in runs():
            await _write(connection, run, now - timedelta(days=run.index % 7, hours=1))
        await _write(connection, Run(99, "a", 5, True, True), now - timedelta(days=60))
    return now


async def _write(connection: Any, run: Run, started: datetime) -> None:
    channel = "line" if run.index % 4 == 3 else "web"
    conversation_id = (
        await connection.execute(
            sa.insert(conversations)
            .values(
                channel=channel,
                address=f"seed-{run.index}",
                flow="career",
                flow_version="v1",
                state="summary",
                slots={},
                selection=[],
                misses=0,
                pending_confirm=[],
                status="active",
                mode="bot",
                version=1,
                created_at=started,
                updated_at=started,
                variant=run.variant,
                run_at=started,
            )
            .returning(conversations.c.id)
        )
    ).scalar_one()
    rows: list[dict[str, Any]] = []
    clock = [started]

    def fact(kind: str, **values: Any) -> None:
        clock[0] += timedelta(seconds=1)
        rows.append(
            {
                "conversation_id": conversation_id,
                "run_at": started,
                "at": clock[0],
                "kind": kind,
                "flow": "career",
                "flow_version": "v1",
                "variant": run.variant,
                "channel": channel,
                "state": None,
                "value": None,
                "how": None,
                "stage": None,
                "seconds": None,
                **values,
            }
        )

    fact("entered", state="greeting")
    fact("step", value="started")
    fact("entered", state="ask_role")
    if run.role_missed:
        fact("not_understood", state="ask_role", how="typed", stage="none")
    if run.reach >= 1:
        how = "typed" if run.role_typed else "tapped"
        stage = "keyword" if run.role_typed else None
        fact("answer", state="ask_role", value=run.role, how=how, stage=stage,
             seconds=float(run.index % 9 + 1))  # fmt: skip
        fact("step", value="role")
        fact("entered", state="ask_frustrations")
    if run.reach >= 2:
        for pick in run.frustrations.split(","):
            fact("pick", state="ask_frustrations", value=pick, how="tapped")
        fact("answer", state="ask_frustrations", value=run.frustrations, how="tapped", seconds=20.0)
        fact("step", value="frustrations")
        fact("cross", state="ask_role", value=f"{run.role}|{run.frustrations}")
    if run.reach >= 3:
        for question in FIT_QUESTIONS:
            fact("answer", state=question, value="yes", how="tapped", seconds=5.0)
        fact("entered", state="fit_result")
        fact("result", state="fit_result", value=run.fit)
        fact("step", value="fit")
    if run.reach >= 4:
        fact("answer", state="ask_direction", value=run.direction, how="tapped", seconds=8.0)
        fact("entered", state="ways")
        fact("step", value="advice")
    if run.reach >= 5:
        fact("entered", state="summary")
        fact("step", value="summary")
    if run.asked:
        fact("handoff_requested", state="handoff")
        fact("step", value="@handoff_requested")
    if run.talked:
        fact("handoff_claimed", state="handoff")
        fact("step", value="@handoff_claimed")
        outcome = (
            OUTCOMES[sorted(r.index for r in runs() if r.talked).index(run.index)]
            if run.index != 99
            else None
        )
        fact("handoff_released", state="after_agent", value=outcome)
    if run.reach < 5:
        fact("abandoned", state=WAITS_AT[run.reach])
    # Counted as the store counts what it inserts.
    inserted = await connection.execute(sa.insert(facts).returning(*RETURNED), rows)
    await add_counts(connection, inserted.all())
