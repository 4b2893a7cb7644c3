"""Abandoned runs, marked by the periodic job where they stopped, once per run, on SQLite and
PostgreSQL; ended runs and runs with an agent are not abandoned; claims and releases are facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bot.core.jobs import Jobs, JobsTuning
from bot.core.service import ConversationService
from bot.engine import Engine
from bot.flows.loader import load_flow
from bot.models import Channel, ChoiceIn, ConversationKey, StartIn
from bot.records import HandoffOutcome
from bot.store import HandoffStore, SqlStore
from bot.store.facts import COUNT_DAYS
from bot.store.insights import InsightsStore, Period
from bot.store.schema import conversations, facts

MINI = Path(__file__).parent / "flows" / "mini.yaml"


async def kinds(store: SqlStore, kind: str) -> list[tuple[str, str | None, str | None]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(conversations.c.address, facts.c.state, facts.c.value)
            .join(conversations, conversations.c.id == facts.c.conversation_id)
            .where(facts.c.kind == kind)
            .order_by(facts.c.id)
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_runs_left_idle_are_abandoned_once_where_they_stopped(store: SqlStore) -> None:
    service = ConversationService(
        store=store, engines={"mini": Engine(load_flow(MINI))}, default_flow="mini"
    )
    left, finished, agent = (
        ConversationKey(channel=Channel.WEB, address=name) for name in ("left", "finished", "agent")
    )
    for key in (left, finished, agent):
        await service.handle(key, StartIn())
        await service.handle(key, ChoiceIn(choice="keiri", state="role"))
    await service.handle(finished, ChoiceIn(choice="thanks", state="pains"))
    await service.handle(finished, ChoiceIn(choice="__done__", state="pains"))
    await service.handle(agent, ChoiceIn(choice="agent"))  # waiting for an agent
    assert [a for a, _, _ in await kinds(store, "ended")] == ["finished"]

    jobs = Jobs(store=store, retention_days=90, tuning=JobsTuning(), abandon_after_hours=1)
    assert await jobs.mark_abandoned() == 0  # nobody has been idle an hour yet
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await store.mark_abandoned(idle_since=later) == 1
    assert await kinds(store, "abandoned") == [("left", "pains", None)]
    assert await store.mark_abandoned(idle_since=later) == 0  # once per run

    # An agent takes the waiting one, and hands it back: both are facts of its run.
    handoffs = HandoffStore(engine=store.engine)
    stored = await store.load(agent)
    assert stored is not None
    opened, _ = await handoffs.open(stored.id, reason="相談希望", summary={})
    await handoffs.claim(opened.id, agent="hanako", agent_name="山田 花子")
    await handoffs.release(opened.id, agent="hanako", outcome=HandoffOutcome.BOOKED)
    assert [(a, k) for a, k, _ in await kinds(store, "handoff_claimed")] == [("agent", "handoff")]
    assert await kinds(store, "handoff_released") == [("agent", "handoff", "booked")]
    requested = await kinds(store, "handoff_requested")
    assert [a for a, _, _ in requested] == ["agent"]

    # The outcome the agent gave is what insights count (a released handoff without one too).
    today = datetime.now(COUNT_DAYS).date()
    period = Period(flow="mini", first=today - timedelta(days=1), last=today + timedelta(days=1))
    insights = InsightsStore(engine=store.engine)
    assert await insights.outcomes(period) == {"booked": 1}
    steps = await insights.steps(period)
    assert steps[("@handoff_requested", "")] == steps[("@handoff_claimed", "")] == 1


async def test_a_users_facts_are_in_their_export_and_go_with_them(store: SqlStore) -> None:
    service = ConversationService(
        store=store, engines={"mini": Engine(load_flow(MINI))}, default_flow="mini"
    )
    key = ConversationKey(channel=Channel.LINE, address="U-facts")
    await service.handle(key, StartIn())
    await service.handle(key, ChoiceIn(choice="keiri", state="role"))
    exported = await store.export_user(key, who="cli:test")
    kinds_exported = [f["kind"] for f in exported["conversation"]["facts"]]
    assert kinds_exported[:3] == ["entered", "entered", "entered"]  # hello, role, then pains
    assert "answer" in kinds_exported
    await store.forget_user(key, who="cli:test")
    assert await kinds(store, "answer") == []
