"""The composition root: builds one process's object graph, in order, for its role.

Everything is made here and handed to what needs it (channels get the core's ports, never the
store); nothing is registered on a shared object later. `Runtime.close` tears it down in
reverse order (an AsyncExitStack).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.booking.calendar import Closures
from bot.booking.slots import SlotPolicy
from bot.channels.line.adapter import LineAdapter, LineChannel
from bot.channels.line.quota import QuotaWatch
from bot.channels.slack.adapter import SlackAdapter, SlackChannel
from bot.config import Settings
from bot.core.backpressure import Foreground
from bot.core.booking import BookingDesk
from bot.core.booking_reminders import REMINDER, BookingReminders, parse_before
from bot.core.clock import Clock, SystemClock
from bot.core.followups import FollowUpHandler
from bot.core.inbox import Worker
from bot.core.jobs import Jobs, JobsTuning
from bot.core.leases import LeaseKeeper, job_lease
from bot.core.lookup import ConversationLookup
from bot.core.outbox import Outbox, OutboxTuning
from bot.core.ports import AgentSurface, Courier, EventHandler, Sender
from bot.core.quiet_hours import QuietHours
from bot.core.service import FOLLOWUP_TIMER, ConversationService, EngineVariant
from bot.core.timers import SAY, SayHandler, TimerHandler, TimerRunner
from bot.engine import Engine
from bot.errors import ConfigError, FlowError, StoreError
from bot.flows.loader import Flow, load_flows
from bot.flows.schema import ChoiceSpec, CommandSpec, FaqSpec
from bot.flows.variants import resolve
from bot.handoff.desk import HandoffDesk
from bot.handoff.hours import AgentHours
from bot.metrics import Metrics
from bot.models import Channel
from bot.nlu.classifier import build_understander, default_cache_dir
from bot.nlu.understanding import Understander, Understanding
from bot.store import BookingStore, SqlStore
from bot.store.canned import CannedReplyStore
from bot.store.handoffs import HandoffStore
from bot.tracing import span

log = logging.getLogger(__name__)

Role = Literal["web", "worker", "all"]
"""`all`: one process does everything (WORKER_MODE=inline). `web`: a server that records
events and leaves them to workers (WORKER_MODE=separate). `worker`: `yarigai worker`."""


DEFAULT_TUNING = OutboxTuning()
DEFAULT_JOBS = JobsTuning()
DEFAULT_CHANNELS: tuple[LineChannel | SlackChannel, ...] = (LineChannel(), SlackChannel())
YOUNG_COLLECTED_EVERY: Final = 20_000
"""Allocations between collections of the garbage collector's youngest generation (Python's
default: 700); see `_settle_the_heap`."""


def role_of(settings: Settings, *, worker_process: bool = False) -> Role:
    """The one place the process role is decided."""
    if worker_process:
        return "worker"
    return "all" if settings.worker_mode == "inline" else "web"


@dataclass(eq=False)
class Runtime:
    """One process's objects (the HTTP app and the CLI read them; channels never see it)."""

    settings: Settings
    role: Role
    flows: dict[str, Flow]
    store: SqlStore
    service: ConversationService
    worker: Worker
    outbox: Outbox
    metrics: Metrics
    desk: HandoffDesk
    jobs: Jobs
    booking: BookingDesk
    timers: TimerRunner
    leases: LeaseKeeper | None = None  # several processes run events (WORKER_MODE=separate)
    line: LineAdapter | None = None
    quota: QuotaWatch | None = None  # LINE's push allowance, read where /metrics is served
    slack: SlackAdapter | None = None
    senders: dict[Channel, Sender] = field(default_factory=dict)
    _exit: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def runs_turns(self) -> bool:
        """This process runs recorded events (and delivers their replies)."""
        return self.role != "web"

    async def start(self) -> None:
        """Start delivering and running events (a web-only process does neither)."""
        _settle_the_heap()
        if self.quota is not None and self.role != "worker":  # the processes serving /metrics
            self.quota.start()
            self._exit.push_async_callback(self.quota.close)
        if not self.runs_turns:
            log.info("WORKER_MODE=separate: LINE and Slack events are run by `yarigai worker`")
            return
        if self.leases is not None:
            self.leases.start()
            self._exit.push_async_callback(self.leases.close)
        # Before the inbox resumes events: what is pending now is the last run's.
        await self.outbox.start()
        self._exit.push_async_callback(self.outbox.close)
        if self.leases is None:  # the only process: the background jobs are its own
            await self._start_jobs()
        else:  # each job runs in one process at a time, whichever holds its lease
            watching = asyncio.get_running_loop().create_task(self._take_jobs(self.leases))
            self._exit.push_async_callback(_cancelled, watching)
        recovered = await self.worker.recover()
        if recovered:
            log.info("resuming %d events recorded before the last stop", recovered)

    async def _start_jobs(self) -> None:
        self.desk.start()
        self._exit.push_async_callback(self.desk.close)
        self.jobs.start()
        self._exit.push_async_callback(self.jobs.close)

    async def _take_jobs(self, leases: LeaseKeeper) -> None:
        """Take the background jobs' lease when it is free (its holder stopped or died)."""
        name = job_lease("background")
        running = False
        while True:
            if running and not leases.holds(name):  # lost (the database was away too long)
                log.warning("background jobs passed to another process")
                await self.desk.close()
                await self.jobs.close()
                running = False
            if not running:
                try:
                    running = name in await leases.acquire([name])
                except StoreError as exc:
                    log.warning("background jobs' lease not taken (%s)", type(exc).__name__)
                if running:
                    log.info("running the background jobs (timers, handoff waits, purge)")
                    self.desk.start()
                    self.jobs.start()
            await asyncio.sleep(leases.ttl / 3)

    async def close(self) -> None:
        await self.worker.close()  # first: what runs events finishes while the rest works
        await self.desk.close()
        await self.jobs.close()
        await self._exit.aclose()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def build(
    settings: Settings,
    role: Role,
    *,
    foreground: Foreground | None = None,
    channels: Sequence[LineChannel | SlackChannel] = DEFAULT_CHANNELS,
    surfaces: Sequence[AgentSurface] = (),
    outbox: OutboxTuning = DEFAULT_TUNING,
    jobs: JobsTuning = DEFAULT_JOBS,
    clock: Clock | None = None,
) -> Runtime:
    """Load flows (refusing broken ones), open and migrate the store, and build the rest.

    `foreground`:
    what batches of turns give way to (bot/core/backpressure.py); by default this process's
    own webhooks. `channels`: the channels' tuning (tests pass their own). `surfaces`: agent
    surfaces made outside (the web console's feed). `clock`: what time it is for timers
    (tests pass a fake one)."""
    flows = load_flows(settings.flows_dir)
    if settings.default_flow not in flows:
        raise FlowError(
            f"DEFAULT_FLOW '{settings.default_flow}' is not among the flows: "
            + ", ".join(sorted(flows)),
            file=str(settings.flows_dir),
        )
    # Refuse bad AGENT_HOURS, CLOSED_DATES or BOOKING_ZONE before any I/O.
    closures = Closures.parse(settings.closed_dates, public_holidays=settings.public_holidays)
    hours = AgentHours.parse(settings.agent_hours, closures=closures)
    slot_policy = _slot_policy(settings, closures)
    reminder_hours = parse_before(settings.reminder_before_hours)
    quiet = QuietHours.parse(settings.quiet_hours)  # and a bad QUIET_HOURS
    exit_stack = AsyncExitStack()
    store = await SqlStore.open(settings.database_url)
    exit_stack.push_async_callback(store.close)
    try:
        return await _build(
            settings,
            role,
            flows=flows,
            hours=hours,
            slot_policy=slot_policy,
            reminder_hours=reminder_hours,
            quiet=quiet,
            store=store,
            exit_stack=exit_stack,
            foreground=foreground or Foreground(),
            channels=channels,
            surfaces=surfaces,
            outbox_tuning=outbox,
            jobs_tuning=jobs,
            clock=clock or SystemClock(),
        )
    except BaseException:
        await exit_stack.aclose()
        raise


async def _build(
    settings: Settings,
    role: Role,
    *,
    flows: dict[str, Flow],
    hours: AgentHours,
    slot_policy: SlotPolicy,
    reminder_hours: tuple[int, ...],
    quiet: QuietHours,
    store: SqlStore,
    exit_stack: AsyncExitStack,
    foreground: Foreground,
    channels: Sequence[LineChannel | SlackChannel],
    surfaces: Sequence[AgentSurface],
    outbox_tuning: OutboxTuning,
    jobs_tuning: JobsTuning,
    clock: Clock,
) -> Runtime:
    metrics = Metrics()
    resolved = {name: resolve(flow) for name, flow in flows.items()}
    every_flow = [variant.flow for variants in resolved.values() for variant in variants]
    nlu = _Traced(build_understander(every_flow, cache_dir=default_cache_dir()))
    # Each A/B variant is a plain flow of its own; the service picks one per conversation.
    built = {
        name: [EngineVariant(v.id, v.weight, Engine(v.flow, understand=nlu)) for v in variants]
        for name, variants in resolved.items()
    }
    engines = {name: variants[0].engine for name, variants in built.items()}
    service = ConversationService(
        store=store,
        engines=engines,
        variants={name: built[name] for name, flow in flows.items() if flow.spec.variants},
        default_flow=settings.default_flow,
        metrics=metrics,
        foreground=foreground,
        clock=clock,
    )
    # Workers (WORKER_MODE=separate) share the events by leases; one process alone needs none.
    leases = LeaseKeeper(store=store) if role == "worker" else None
    worker = Worker(store=store, local=role != "web", leases=leases, foreground=foreground)
    if leases is not None:
        leases.on_lost = worker.lost
    # Filled below, before anything runs: the desk reaches users through the channels'
    # senders and tells the agent surfaces, and the Slack agent channel acts through the desk.
    senders: dict[Channel, Sender] = {}
    all_surfaces: list[AgentSurface] = list(surfaces)
    couriers: dict[Channel, Courier] = {}
    desk = HandoffDesk(
        store=store,
        handoffs=HandoffStore(engine=store.engine),
        service=service,
        hours=hours,
        timeout=timedelta(minutes=settings.handoff_timeout_minutes),
        spawn=worker.spawn,
        senders=senders,
        surfaces=all_surfaces,
        canned=CannedReplyStore(engine=store.engine),
        agency=settings.agency_name or _default_agency(flows, settings.default_flow),
    )
    service.hooks = desk
    service.listeners.append(desk.on_turn)
    booking = BookingDesk(
        bookings=BookingStore(engine=store.engine),
        policy=slot_policy,
        method=settings.meeting_method,
        meeting_url=settings.meeting_url,
        public_url=settings.public_url,
        policy_url=settings.privacy_policy_url,
        policy_version=settings.privacy_policy_version,
        surfaces=all_surfaces,
        clock=clock.now,
    )
    service.booking = booking
    reminders = BookingReminders(
        store=store,
        desk=booking,
        engines=engines,
        quiet=quiet,
        before=reminder_hours,
        clock=clock,
    )
    booking.listeners.append(reminders.on_change)
    booking.agent_cancelled.append(reminders.cancelled_by_agent)
    outbox = Outbox(
        store=store, couriers=couriers, metrics=metrics, leases=leases, tuning=outbox_tuning
    )
    lookup = ConversationLookup(store=store)
    line: LineAdapter | None = None
    slack: SlackAdapter | None = None
    handlers: dict[Channel, EventHandler] = {}
    for setup in channels:
        if isinstance(setup, LineChannel):
            line = await setup.build(settings, turns=service, recorder=worker, deliveries=outbox)
            if line is not None:
                exit_stack.push_async_callback(line.close)
                senders[Channel.LINE] = line.sender
                couriers[Channel.LINE] = line.courier
                handlers[Channel.LINE] = line.handle
        else:
            slack = await setup.build(
                settings,
                turns=service,
                recorder=worker,
                deliveries=outbox,
                conversations=lookup,
                desk=desk,
            )
            if slack is not None:
                exit_stack.push_async_callback(slack.close)
                senders[Channel.SLACK] = slack.sender
                couriers[Channel.SLACK] = slack.courier
                handlers[Channel.SLACK] = slack.handle
                all_surfaces.extend(slack.surfaces)
    for channel, handler in handlers.items():
        worker.register(channel.value, handler)
    # One handler per timer kind; a kind nobody registered is settled as failed, loudly.
    timer_handlers: dict[str, TimerHandler] = {
        SAY: SayHandler(quiet=quiet),
        FOLLOWUP_TIMER: FollowUpHandler(
            engines=engines, quiet=quiet, booking_pending=booking.has_upcoming
        ),
        REMINDER: reminders,
    }
    timers = TimerRunner(
        store=store,
        service=service,
        outbox=outbox,
        clock=clock,
        handlers=timer_handlers,
        metrics=metrics,
        leases=leases,
    )
    log.info("loaded flows: %s", ", ".join(f"{f.id}@{f.version}" for f in flows.values()))
    return Runtime(
        settings=settings,
        role=role,
        flows=flows,
        store=store,
        service=service,
        worker=worker,
        outbox=outbox,
        metrics=metrics,
        desk=desk,
        booking=booking,
        jobs=Jobs(
            store=store,
            retention_days=settings.retention_days,
            abandon_after_hours=settings.abandon_after_hours,
            tuning=jobs_tuning,
            timers=timers,
        ),
        timers=timers,
        leases=leases,
        line=line,
        quota=QuotaWatch(api=line.api, metrics=metrics) if line is not None else None,
        slack=slack,
        senders=senders,
        _exit=exit_stack,
    )


def _slot_policy(settings: Settings, closures: Closures) -> SlotPolicy:
    try:
        zone = ZoneInfo(settings.booking_zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"BOOKING_ZONE {settings.booking_zone!r} is no time zone") from error
    return SlotPolicy(
        minutes=settings.booking_slot_minutes,
        lead=timedelta(hours=settings.booking_lead_hours),
        horizon_days=settings.booking_horizon_days,
        zone=zone,
        closures=closures,
    )


class _Traced:
    """The NLU in a span of its own (the engine stays pure: the span is put around it here)."""

    def __init__(self, understand: Understander) -> None:
        self._understand = understand

    def __call__(
        self,
        text: str,
        *,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        multi: bool,
        faqs: Sequence[FaqSpec] = (),
    ) -> Understanding:
        with span("nlu"):
            return self._understand(
                text, choices=choices, commands=commands, multi=multi, faqs=faqs
            )


def _default_agency(flows: Mapping[str, Flow], default_flow: str) -> str:
    """{{agency}} in saved replies when AGENCY_NAME is unset: what the default flow calls it."""
    flow = flows.get(default_flow)
    return flow.spec.vars.get("agency", "") if flow is not None else ""


def _settle_the_heap() -> None:
    """What start-up built (flows, the NLU's tables, SDK models) lives as long as the process:
    moved out of the garbage collector's sight, so its collections no longer walk it (a tenth
    of a web server's time per webhook).

    The youngest generation is then collected every 20,000 allocations instead of 700: a turn
    allocates thousands, almost all freed at once by reference counting, so collecting that
    often mostly walked the objects of turns still under way (a worker: 1.13-1.17 against
    1.24-1.28 ms of CPU per message, three runs each)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTED_EVERY)
