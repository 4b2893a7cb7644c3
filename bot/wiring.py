"""Everything a running server holds: settings, flows, store, service, worker, metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.config import Settings
from bot.core.backpressure import Foreground
from bot.core.inbox import Worker
from bot.core.service import ConversationService
from bot.engine import Engine
from bot.errors import FlowError
from bot.flows.loader import Flow, load_flows
from bot.handoff.desk import AgentSurface, HandoffDesk
from bot.handoff.hours import AgentHours
from bot.metrics import Metrics
from bot.models import Channel
from bot.nlu.classifier import build_understander, default_cache_dir
from bot.store import SqlStore
from bot.store.handoffs import HandoffStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    flows: dict[str, Flow]
    store: SqlStore
    service: ConversationService
    worker: Worker
    metrics: Metrics
    desk: HandoffDesk  # handoffs to agents (bot/handoff.py)
    # Channel senders (by channel) for messages outside a webhook reply, e.g. an agent's.
    senders: dict[Channel, Any] = field(default_factory=dict)
    # Coroutine functions run at shutdown, last registered first (channel clients).
    teardown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Where agents see handoffs (web console feed, Slack agent channel); the desk tells each.
    surfaces: list[AgentSurface] = field(default_factory=list)
    # This process runs recorded events and the background jobs (sweeps, purges, handoff
    # timeouts): a web server in WORKER_MODE=inline, or `yarigai worker`.
    background: bool = True

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        worker_process: bool = False,
        shard: tuple[int, int] = (0, 1),
        foreground: Foreground | None = None,
    ) -> Runtime:
        """Load flows (refusing broken ones), open and migrate the store.

        `worker_process`: this is `yarigai worker`, which runs the recorded events (and the
        background jobs) for web servers started with WORKER_MODE=separate. `foreground`:
        what batches of turns give way to (bot/priority.py); by default this process's own
        webhooks. `shard` (i, n): this worker's part of the users when n workers share them;
        only the first runs the background jobs."""
        flows = load_flows(settings.flows_dir)
        if settings.default_flow not in flows:
            raise FlowError(
                f"DEFAULT_FLOW '{settings.default_flow}' is not among the flows: "
                + ", ".join(sorted(flows)),
                file=str(settings.flows_dir),
            )
        hours = AgentHours.parse(settings.agent_hours)  # refuse a bad AGENT_HOURS before any I/O
        store = await SqlStore.open(settings.database_url)
        metrics = Metrics()
        nlu = build_understander(flows.values(), cache_dir=default_cache_dir())
        engines = {name: Engine(flow, understand=nlu) for name, flow in flows.items()}
        service = ConversationService(
            store=store,
            engines=engines,
            default_flow=settings.default_flow,
            metrics=metrics,
            foreground=foreground or Foreground(),
        )
        runs_turns = worker_process or settings.worker_mode == "inline"
        background = runs_turns and shard[0] == 0
        worker = Worker(store=store, local=runs_turns, shard=shard)
        senders: dict[Channel, Any] = {}
        surfaces: list[AgentSurface] = []
        desk = HandoffDesk(
            store=store,
            handoffs=HandoffStore(engine=store.engine),
            service=service,
            hours=hours,
            timeout=timedelta(minutes=settings.handoff_timeout_minutes),
            spawn=worker.spawn,
            senders=senders,
            surfaces=surfaces,
        )
        service.hooks = desk
        service.listeners.append(desk.on_turn)
        log.info("loaded flows: %s", ", ".join(f"{f.id}@{f.version}" for f in flows.values()))
        return cls(
            settings=settings,
            flows=flows,
            store=store,
            service=service,
            worker=worker,
            metrics=metrics,
            desk=desk,
            senders=senders,
            surfaces=surfaces,
            background=background,
        )

    async def close(self) -> None:
        await self.worker.close()
        for step in reversed(self.teardown):
            await step()
        await self.store.close()
