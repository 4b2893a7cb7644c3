"""LINE webhook benchmark: signed load over HTTP against the running server, with a fake LINE API.

Starts three processes on 127.0.0.1 (the fake LINE Messaging API, the bot with its SQLite
database, and a bare FastAPI endpoint for comparison), then, from this process:

1. burst: N signed webhook requests (one text message each, many users) as fast as C
   connections allow, against the bare endpoint and then the bot. Prints acknowledgements per
   second, their ratio, acknowledgement latency p50/p99, and how fast the bot answered all of
   them end to end (the last reply reaching the fake LINE API).
2. paced: a steady rate (default 500 messages/s, the goal) for a few seconds: acknowledgement
   and reply latency (event sent -> reply request at the fake LINE API) p50/p99 at that load.
3. calm: half the measured end-to-end rate, for reply latency when the bot keeps up.

Bounded in count and time (--events, --paced-seconds, --timeout). Run:
`.venv/bin/python bench/line_webhook.py [--events 2000] [--rate 500]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp
from harness import (
    ACCESS_TOKEN,
    CHANNEL_SECRET,
    REPO,
    Replies,
    burst,
    children,
    cpu_seconds,
    free_port,
    latencies,
    ms,
    paced,
    process,
    users,
    walk,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="requests per burst")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0, help="paced phase, messages/s")
    parser.add_argument("--paced-seconds", type=float, default=4.0)
    parser.add_argument("--calm-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=90.0, help="bound on each phase")
    parser.add_argument("--workers", type=int, default=2, help="SERVE_WORKERS (separate mode)")
    parser.add_argument(
        "--validate-every",
        type=int,
        default=10,
        metavar="N",
        help="the fake checks one request in N against LINE's spec (1: all; the tests check all)",
    )
    parser.add_argument(
        "--worker-mode",
        choices=("separate", "inline"),
        default="separate",
        help="separate: the server answers webhooks and `yarigai worker` runs the turns",
    )
    args = parser.parse_args()
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        fake_port, bot_port, bare_port = free_port(), free_port(), free_port()
        fake_cmd = [sys.executable, str(REPO / "tests" / "fakes" / "line_api.py")]
        fake_cmd += ["--port", str(fake_port), "--validate-every", str(args.validate_every)]
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "FLOWS_DIR": str(REPO / "flows"),
            "DEFAULT_FLOW": "career",
            "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
            "LINE_CHANNEL_ACCESS_TOKEN": ACCESS_TOKEN,
            "LINE_API_BASE_URL": f"http://127.0.0.1:{fake_port}",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
            "WORKER_MODE": args.worker_mode,
            "SERVE_WORKERS": str(args.workers),
        }
        uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]
        uvicorn += ["--log-level", "warning"]
        # As deployed: `yarigai serve`, which in WORKER_MODE=separate starts `yarigai worker`.
        bot_cmd = [sys.executable, "-m", "bot.cli", "serve", "--port", str(bot_port)]
        bare_cmd = [*uvicorn, "--port", str(bare_port), "--app-dir", str(REPO / "bench")]
        bare_cmd += ["harness:bare_app"]
        with (
            process(fake_cmd, env, workdir, f"http://127.0.0.1:{fake_port}/_fake/stats"),
            process(bare_cmd, env, workdir, f"http://127.0.0.1:{bare_port}/webhooks/line"),
            process(bot_cmd, env, workdir, f"http://127.0.0.1:{bot_port}/healthz") as bot,
        ):
            pids = [bot.pid, *children(bot.pid)]
            await bench(args, fake_port, bot_port, bare_port, pids)


async def bench(
    args: argparse.Namespace, fake_port: int, bot_port: int, bare_port: int, bot_pids: list[int]
) -> None:
    fake = f"http://127.0.0.1:{fake_port}"
    bare_url = f"http://127.0.0.1:{bare_port}/webhooks/line"
    bot_url = f"http://127.0.0.1:{bot_port}/webhooks/line"
    connector = aiohttp.TCPConnector(limit=args.connections)
    sending = {"connections": args.connections, "patience": args.timeout}
    async with aiohttp.ClientSession(connector=connector) as http:
        replies = Replies(http, fake)
        # Warm both servers (imports, first connections, SQLite pages) before measuring.
        await burst(http, bare_url, walk(users(50), 200), **sending)
        await burst(http, bot_url, walk(users(50), 200), **sending)
        await replies.until(200, args.timeout)

        bare = await burst(http, bare_url, walk(users(args.users), args.events), **sending)
        cpu_before = cpu_seconds(bot_pids)
        loaded = await burst(http, bot_url, walk(users(args.users), args.events), **sending)
        await replies.until(200 + loaded.ok, args.timeout)
        burst_cpu = cpu_seconds(bot_pids) - cpu_before
        burst_replies = replies.since(loaded.started)
        e2e = len(burst_replies) / (max(r[2] for r in burst_replies) - loaded.started)

        steady = list(walk(users(args.users), int(args.rate * args.paced_seconds)))
        at_rate = await paced(http, bot_url, steady, args.rate)
        await replies.until(replies.answered + at_rate.ok, args.timeout)
        paced_replies = replies.since(at_rate.started)

        calm_rate = max(10.0, e2e / 2)
        cpu_before = cpu_seconds(bot_pids)
        quiet = list(walk(users(args.users), int(calm_rate * args.calm_seconds)))
        calm = await paced(http, bot_url, quiet, calm_rate)
        await replies.until(replies.answered + calm.ok, args.timeout)
        calm_cpu = cpu_seconds(bot_pids) - cpu_before
        calm_replies = replies.since(calm.started)
        stats = await replies.stats()

    validating = (
        "checking every request against the spec"
        if args.validate_every == 1
        else f"checking one request in {args.validate_every} against the spec"
    )
    processes = (
        f"web server + {args.workers} x `yarigai worker`"
        if args.worker_mode == "separate"
        else "one process (WORKER_MODE=inline)"
    )
    print(
        f"LINE webhook benchmark: {os.cpu_count()} CPUs, SQLite, bot as {processes}, "
        f"fake LINE API {validating}"
    )
    print(
        f"burst: {args.events} signed requests (1 text message each, {args.users} users) "
        f"over {args.connections} connections"
    )
    print(
        f"  bare FastAPI endpoint {bare.rate:7.0f} acks/s  ack p50 {ms(bare.latencies, 50)}  p99 {ms(bare.latencies, 99)}"
    )
    print(
        f"  bot /webhooks/line    {loaded.rate:7.0f} acks/s  ack p50 {ms(loaded.latencies, 50)}  "
        f"p99 {ms(loaded.latencies, 99)}  = {loaded.rate / bare.rate:.2f} of bare"
    )
    print(
        f"  answered end to end   {e2e:7.0f} messages/s ({len(burst_replies)}/{loaded.sent} "
        f"answered; reply latency behind the backlog p50 {ms(latencies(burst_replies), 50)} "
        f"p99 {ms(latencies(burst_replies), 99)})"
    )
    print(
        f"  bot CPU per message   {burst_cpu / max(1, len(burst_replies)) * 1000:7.2f} ms "
        f"(acknowledge, turn and reply; calm: {calm_cpu / max(1, len(calm_replies)) * 1000:.2f} ms)"
    )
    for name, run, answered in (("paced", at_rate, paced_replies), ("calm", calm, calm_replies)):
        print(
            f"{name}: {run.rate:.0f} messages/s for {run.seconds:.1f}s: ack p50 "
            f"{ms(run.latencies, 50)} p99 {ms(run.latencies, 99)}; reply latency p50 "
            f"{ms(latencies(answered), 50)} p99 {ms(latencies(answered), 99)} "
            f"({len(answered)}/{run.sent} answered)"
        )
    failed = (
        bare.sent
        - bare.ok
        + loaded.sent
        - loaded.ok
        + at_rate.sent
        - at_rate.ok
        + calm.sent
        - calm.ok
    )
    print(
        f"fake LINE API: answers {stats['statuses']}, checked against the spec "
        f"{stats['checked']}, invalid {stats['invalid']}, "
        f"pushes {len(stats['pushed'])}; webhooks not answered 200: {failed}"
    )


if __name__ == "__main__":
    main()
