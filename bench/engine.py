"""How fast a career conversation runs: the pure engine, then the engine through the store.

    .venv/bin/python bench/engine.py [--quick]

Prints figures and ratios; asserts nothing. The store part runs on a SQLite file in a
temporary directory and on PostgreSQL (TEST_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test) in a schema created and dropped here; PostgreSQL is
skipped with a note when it does not answer. Turns are awaited one after another, so the
latencies are those of a single conversation's worker, not of a loaded server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.core.service import ConversationService
from bot.engine import Engine
from bot.errors import StoreError
from bot.flows.loader import load_flows
from bot.models import (
    Channel,
    ChoiceIn,
    ChoicesOut,
    ConversationKey,
    ConversationState,
    ResumeIn,
    StartIn,
    TextIn,
    Turn,
    outbound_text,
)
from bot.store import SqlStore, create_engine
from bot.store.schema import conversations, messages

ROOT: Final = Path(__file__).resolve().parent.parent
POSTGRES_URL: Final = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

Event = TextIn | ChoiceIn | StartIn | ResumeIn

# One whole conversation, typed and tapped the way people do: the main path of the flow, a
# handoff and two returns from an agent, help, a miss, and a restart that makes it loop.
SCRIPT: Final[tuple[tuple[str, str], ...]] = (
    ("start", ""),
    ("say", "経理やってます"),
    ("say", "毎日おなじことの繰り返しでつまんない"),
    ("tap", "評価されていない"),
    ("say", "以上です"),
    ("say", "ううん、別に"),
    ("tap", "当てはまる"),
    ("say", "そうでもないかな"),
    ("tap", "当てはまる"),
    ("say", "あんまり"),
    ("tap", "当てはまる"),
    ("say", "全然"),
    ("tap", "当てはまる"),
    ("say", "今の会社で工夫してみたい"),
    ("say", "もうやってる"),
    ("say", "簿記2級とりたい"),
    ("tap", "前向きになれた"),
    ("say", "決算を乗り切ったとき"),
    ("tap", "話してみたい"),
    ("resume", ""),
    ("say", "もうちょっと話したい"),
    ("resume", ""),
    ("tap", "診断の続きをする"),
    ("say", "ヘルプ"),
    ("say", "なんだろう"),
    ("tap", "最初からやり直す"),
)
NEW_TURNS: Final = 5  # a new conversation: the script's first turns, up to the fit questions
EXISTING_TEXT: Final = "はい"  # answers whichever fit question a stored conversation waits on
FILL_BATCH: Final = 5_000
WARM_UP: Final = 10  # conversations run before measuring


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    engine_loops: int
    long_loops: int
    new_conversations: int
    fill: int
    fill_messages: int  # transcript lines stored with each pre-filled conversation


FULL: Final = Sizes(
    engine_loops=300, long_loops=20, new_conversations=300, fill=100_000, fill_messages=6
)
QUICK: Final = Sizes(
    engine_loops=40, long_loops=4, new_conversations=40, fill=10_000, fill_messages=6
)


@dataclass(frozen=True, slots=True)
class Stats:
    """Seconds per turn."""

    mean: float
    p50: float
    p99: float


@dataclass(frozen=True, slots=True)
class Recorded:
    """The script as engine events, with the kind of each (tap, say, start, resume)."""

    events: tuple[Event, ...]
    kinds: tuple[str, ...]
    # The state after the first NEW_TURNS events and what those turns stored as transcript.
    new_state: ConversationState
    new_transcript: tuple[tuple[str, str, str, dict[str, Any]], ...]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer loops and conversations")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load}{' (quick)' if args.quick else ''}"
    )
    started = time.perf_counter()
    flows = load_flows(ROOT / "flows")
    engine = Engine(flows["career"])
    print(f"flows loaded and engine built in {_ms(time.perf_counter() - started)}")
    recorded = record(engine)
    engine_turn = bench_engine(engine, recorded, sizes.engine_loops)
    asyncio.run(bench_stores(engine, recorded, sizes, engine_turn))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


def record(engine: Engine) -> Recorded:
    """Run SCRIPT once, turning taps into the ChoiceIn a channel would send."""
    events: list[Event] = []
    conversation: ConversationState | None = None
    last: ChoicesOut | None = None
    new_state: ConversationState | None = None
    transcript: list[tuple[str, str, str, dict[str, Any]]] = []
    for number, (kind, value) in enumerate(SCRIPT, 1):
        event = _event(kind, value, last)
        turn = engine.advance(conversation, event)
        events.append(event)
        conversation = turn.conversation
        last = next((m for m in reversed(turn.messages) if isinstance(m, ChoicesOut)), last)
        if number <= NEW_TURNS:
            transcript.extend(_transcript(event, turn))
        if number == NEW_TURNS:
            new_state = turn.conversation
    if conversation is None or conversation.state != "ask_role" or new_state is None:
        raise RuntimeError(f"SCRIPT no longer loops back to ask_role: ends at {conversation}")
    return Recorded(
        events=tuple(events),
        kinds=tuple(kind for kind, _ in SCRIPT),
        new_state=new_state,
        new_transcript=tuple(transcript),
    )


def bench_engine(engine: Engine, recorded: Recorded, loops: int) -> Stats:
    """Engine.advance alone over the looping conversation."""
    _title(f"engine alone: {loops} x {len(recorded.events)} turns of the whole conversation")
    conversation: ConversationState | None = None
    samples: list[float] = []
    by_kind: dict[str, list[float]] = {}
    clock = time.perf_counter
    started = clock()
    for _ in range(loops):
        for event, kind in zip(recorded.events, recorded.kinds, strict=True):
            before = clock()
            conversation = engine.advance(conversation, event).conversation
            elapsed = clock() - before
            samples.append(elapsed)
            by_kind.setdefault(kind, []).append(elapsed)
    total = clock() - started
    print(f"  {len(samples)} turns in {total:.2f} s: {len(samples) / total:,.0f} turns/s")
    print(f"  {loops / total:,.1f} whole conversations/s")
    stats = _latencies("  per turn", samples)
    for kind in ("tap", "say", "start", "resume"):
        times = by_kind.get(kind, [])
        if times:
            print(f"    {kind:<6} mean {_us(sum(times) / len(times))} ({len(times)} turns)")
    tap, say = by_kind.get("tap"), by_kind.get("say")
    if tap and say:
        ratio = (sum(say) / len(say)) / (sum(tap) / len(tap))
        print(f"  typed text / tapped button: {ratio:.1f}x in mean")
    return stats


async def bench_stores(
    engine: Engine, recorded: Recorded, sizes: Sizes, engine_turn: Stats
) -> None:
    with tempfile.TemporaryDirectory(prefix="yarigai-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        await bench_store("SQLite (file)", url, None, engine, recorded, sizes, engine_turn)
    problem = await _probe(POSTGRES_URL)
    where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
    if problem is not None:
        _title("PostgreSQL")
        print(f"  skipped: {where} does not answer ({problem}); set TEST_DATABASE_URL")
        return
    schema = f"bench_{uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await bench_store(
            f"PostgreSQL ({where}, schema {schema})",
            POSTGRES_URL,
            schema,
            engine,
            recorded,
            sizes,
            engine_turn,
        )
    finally:
        async with admin.begin() as connection:
            await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.dispose()


async def bench_store(
    name: str,
    url: str,
    schema: str | None,
    engine: Engine,
    recorded: Recorded,
    sizes: Sizes,
    engine_turn: Stats,
) -> None:
    """One long conversation, then new and existing ones on an empty and a filled store."""
    _title(f"through ConversationService on {name}")
    store = await SqlStore.open(url, schema=schema)
    try:
        service = ConversationService(
            store=store, engines={"career": engine}, default_flow="career"
        )
        # Unmeasured: opens pooled connections and fills SQLAlchemy's and the driver's
        # statement caches, which would otherwise land on whichever workload runs first.
        await _run(service, _new_turns(recorded, "warm", WARM_UP))
        await _run(
            service, ((_key(f"warm-{i}"), TextIn(text=EXISTING_TEXT)) for i in range(WARM_UP))
        )
        key = _key("bench-long")
        events = recorded.events * sizes.long_loops
        samples = await _run(service, ((key, event) for event in events))
        long_turn = _report(f"one long conversation ({len(samples)} turns)", samples)
        print("  " + _ratio("store and service / engine alone:", long_turn, engine_turn))

        count = sizes.new_conversations
        empty_new = _report(
            f"empty store, {count} new conversations x {NEW_TURNS} turns",
            await _run(service, _new_turns(recorded, "empty", count)),
        )
        empty_keys = [_key(f"empty-{i}") for i in range(count)]
        empty_existing = _report(
            f"empty store, {count} existing conversations x 1 turn",
            await _run(service, ((k, TextIn(text=EXISTING_TEXT)) for k in empty_keys)),
        )

        started = time.perf_counter()
        rows = await fill(store, recorded, sizes.fill, sizes.fill_messages)
        elapsed = time.perf_counter() - started
        print(
            f"  filled {sizes.fill:,} conversations and {rows:,} transcript lines in "
            f"{elapsed:.1f} s ({(sizes.fill + rows) / elapsed:,.0f} rows/s)"
        )

        filled_new = _report(
            f"filled store, {count} new conversations x {NEW_TURNS} turns",
            await _run(service, _new_turns(recorded, "filled", count)),
        )
        picked = random.Random(7).sample(range(sizes.fill), count)
        filled_existing = _report(
            f"filled store, {count} existing conversations x 1 turn",
            await _run(service, ((_key(f"fill-{i}"), TextIn(text=EXISTING_TEXT)) for i in picked)),
        )
        print("  " + _ratio("filled / empty, new conversations:", filled_new, empty_new))
        print("  " + _ratio("filled / empty, existing ones:   ", filled_existing, empty_existing))
    finally:
        await store.close()


async def fill(store: SqlStore, recorded: Recorded, count: int, lines: int) -> int:
    """Insert `count` conversations waiting on the first fit question, each with `lines`
    transcript lines, in batches of executemany; returns how many transcript lines."""
    state = recorded.new_state.model_dump(mode="json")
    transcript = recorded.new_transcript[:lines]
    base = datetime.now(UTC) - timedelta(days=30)
    insert = sa.insert(conversations).returning(conversations.c.id, sort_by_parameter_order=True)
    written = 0
    for start in range(0, count, FILL_BATCH):
        numbers = range(start, min(start + FILL_BATCH, count))
        # Spread over a month so the (status, updated_at) index is not one value.
        stamps = [base + timedelta(seconds=26 * i) for i in numbers]
        rows = [
            {
                **state,
                "channel": "web",
                "address": f"fill-{i}",
                "mode": "bot",
                "agent": None,
                "version": NEW_TURNS,
                "created_at": stamp,
                "updated_at": stamp,
            }
            for i, stamp in zip(numbers, stamps, strict=True)
        ]
        async with store.engine.begin() as connection:
            ids = (await connection.execute(insert, rows)).scalars().all()
            if transcript:
                await connection.execute(
                    sa.insert(messages),
                    [
                        {
                            "conversation_id": conversation_id,
                            "direction": direction,
                            "sender": sender,
                            "text": text,
                            "body": body,
                            "created_at": stamp,
                        }
                        for conversation_id, stamp in zip(ids, stamps, strict=True)
                        for direction, sender, text, body in transcript
                    ],
                )
        written += len(ids) * len(transcript)
    async with store.engine.begin() as connection:
        # What autovacuum (PostgreSQL) or a periodic ANALYZE would have done by now.
        await connection.exec_driver_sql("ANALYZE")
    return written


# ---------------------------------------------------------------- helpers


def _event(kind: str, value: str, last: ChoicesOut | None) -> Event:
    if kind == "start":
        return StartIn()
    if kind == "resume":
        return ResumeIn()
    if kind == "say":
        return TextIn(text=value)
    choice = next((c for c in last.choices if c.label == value), None) if last else None
    if last is None or choice is None:
        raise RuntimeError(f"SCRIPT taps {value!r}, which is not among the buttons shown")
    return ChoiceIn(choice=choice.id, state=last.state, label=value)


def _transcript(event: Event, turn: Turn) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    """The lines the service would store for this turn (same shape, for the fill)."""
    if isinstance(event, TextIn):
        yield ("in", "user", event.text, event.model_dump(mode="json"))
    elif isinstance(event, ChoiceIn):
        yield ("in", "user", event.label or event.choice, event.model_dump(mode="json"))
    for message in turn.messages:
        yield ("out", "bot", outbound_text(message), message.model_dump(mode="json"))


def _key(address: str) -> ConversationKey:
    return ConversationKey(channel=Channel.WEB, address=address)


def _new_turns(
    recorded: Recorded, prefix: str, count: int
) -> Iterable[tuple[ConversationKey, Event]]:
    for i in range(count):
        key = _key(f"{prefix}-{i}")
        for event in recorded.events[:NEW_TURNS]:
            yield key, event


async def _run(
    service: ConversationService, turns: Iterable[tuple[ConversationKey, Event]]
) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter
    for key, event in turns:
        before = clock()
        await service.handle(key, event)
        samples.append(clock() - before)
    return samples


def _report(label: str, samples: list[float]) -> Stats:
    """Print throughput and latency."""
    print(f"  {label}: {len(samples) / sum(samples):,.0f} turns/s")
    return _latencies("    per turn", samples)


def _latencies(label: str, samples: list[float]) -> Stats:
    ordered = sorted(samples)
    stats = Stats(
        mean=sum(ordered) / len(ordered),
        p50=_quantile(ordered, 0.50),
        p99=_quantile(ordered, 0.99),
    )
    print(
        f"{label}: mean {_us(stats.mean)}  p50 {_us(stats.p50)}  p99 {_us(stats.p99)}  "
        f"max {_us(ordered[-1])}"
    )
    return stats


def _ratio(label: str, numerator: Stats, denominator: Stats) -> str:
    return (
        f"{label} {numerator.p50 / denominator.p50:.2f}x at p50 "
        f"({numerator.mean / denominator.mean:.2f}x in mean)"
    )


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _probe(url: str) -> str | None:
    """None if the database answers, else why not (first line only: no URL, no password)."""
    store = SqlStore(engine=create_engine(url))
    try:
        await asyncio.wait_for(store.ping(), timeout=5)
    except (StoreError, TimeoutError, OSError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    finally:
        await store.close()
    return None


def _title(text: str) -> None:
    print(f"\n{text}")


def _us(seconds: float) -> str:
    if seconds >= 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:,.0f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()
