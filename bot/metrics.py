"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.models import ConversationState
from bot.records import Fact

_FUNNEL_LABELS = ["flow", "flow_version", "variant"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages_in = Counter(
            "yarigai_messages_in",
            "Messages received from users",
            ["channel"],
            registry=self.registry,
        )
        self.messages_out = Counter(
            "yarigai_messages_out", "Messages sent to users", ["channel"], registry=self.registry
        )
        self.turn_seconds = Histogram(
            "yarigai_turn_seconds",
            "Time to handle one inbound message, store included",
            ["channel"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.conversations = Gauge(
            "yarigai_conversations",
            "Conversations per flow state",
            ["state"],
            registry=self.registry,
        )
        self.handoffs_waiting = Gauge(
            "yarigai_handoffs_waiting", "Conversations waiting for an agent", registry=self.registry
        )
        self.deliveries_failed = Counter(
            "yarigai_deliveries_failed",
            "Outbound deliveries that failed for good",
            ["channel"],
            registry=self.registry,
        )
        self.line_quota_limit = Gauge(
            "yarigai_line_quota_messages",
            "Messages LINE lets the channel push this month (-1: no limit)",
            registry=self.registry,
        )
        self.line_quota_used = Gauge(
            "yarigai_line_quota_used_messages",
            "Messages pushed this month, as LINE counts them (replies are free)",
            registry=self.registry,
        )
        self.line_quota_used_ratio = Gauge(
            "yarigai_line_quota_used_ratio",
            "Share of this month's push allowance used (0 with no limit)",
            registry=self.registry,
        )
        self.timers_fired = Counter(
            "yarigai_timers_fired",
            "Durable timers settled, by kind and outcome (sent, skipped, postponed, failed)",
            ["kind", "outcome"],
            registry=self.registry,
        )

        self.inbox_pending = Gauge(
            "yarigai_inbox_pending",
            "LINE and Slack events recorded but not run yet",
            registry=self.registry,
        )
        self.inbox_oldest_seconds = Gauge(
            "yarigai_inbox_oldest_pending_seconds",
            "How long the oldest event not run yet has waited (0 when none waits)",
            registry=self.registry,
        )
        self.inbox_failed = Gauge(
            "yarigai_inbox_failed",
            "Events settled as failed (their error is kept in the inbox)",
            registry=self.registry,
        )

        # The funnel's counts, as the turns record them (the console's insights read the facts).
        self.starts = Counter(
            "yarigai_funnel_starts",
            "Runs of a flow begun (its first funnel step)",
            _FUNNEL_LABELS,
            registry=self.registry,
        )
        self.completions = Counter(
            "yarigai_funnel_completions",
            "Conversations that reached an end state",
            _FUNNEL_LABELS,
            registry=self.registry,
        )
        self.handoffs = Counter(
            "yarigai_funnel_handoffs",
            "Agents asked for from a flow",
            _FUNNEL_LABELS,
            registry=self.registry,
        )
        self.steps = Counter(
            "yarigai_funnel_steps",
            "Funnel steps reached (once per run)",
            [*_FUNNEL_LABELS, "step"],
            registry=self.registry,
        )

    def count_facts(
        self, state: ConversationState, variant: str, facts: Iterable[Fact], *, started: bool
    ) -> None:
        """Count a saved turn's facts (a repeated step may be counted again here, where the
        facts table keeps it once per run)."""
        labels = {"flow": state.flow, "flow_version": state.flow_version, "variant": variant}
        if started:
            self.starts.labels(**labels).inc()
        for fact in facts:
            if fact.kind == "step":
                self.steps.labels(**labels, step=fact.value or "").inc()
            elif fact.kind == "ended":
                self.completions.labels(**labels).inc()
            elif fact.kind == "handoff_requested":
                self.handoffs.labels(**labels).inc()

    def set_inbox(self, pending: int, oldest_seconds: float, failed: int) -> None:
        self.inbox_pending.set(pending)
        self.inbox_oldest_seconds.set(oldest_seconds)
        self.inbox_failed.set(failed)

    def set_conversation_counts(self, by_state: dict[str, int], waiting: int) -> None:
        self.conversations.clear()
        for state, count in by_state.items():
            self.conversations.labels(state=state).set(count)
        self.handoffs_waiting.set(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)
