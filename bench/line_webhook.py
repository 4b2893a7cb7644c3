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
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI, Request, Response

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakes.line_api import (  # noqa: E402  (tests/ is not a package on the path by default)
    ACCESS_TOKEN,
    BOT_USER_ID,
    CHANNEL_SECRET,
    mint_reply_token,
    new_user_id,
    sign,
)
from fakes.processes import children, free_port  # noqa: E402

# What users type, in order: walks the career flow (role, frustrations, the eight fit
# questions...), each message one turn. Users cycle through it.
SCRIPT = (
    "経理です",
    "毎日同じことの繰り返しでつまらない",
    "以上です",
    "いいえ",
    "はい",
    "そうでもない",
    "得意です",
    "あんまり",
    "はい",
    "全然",
    "まさにそれ",
    "今の会社で工夫してみたい",
)

bare_app = FastAPI()


@bare_app.post("/webhooks/line")
async def bare_webhook(request: Request) -> Response:
    """The floor to compare with: read the body, answer 200, do nothing."""
    await request.body()
    return Response(status_code=200)


@dataclass
class Run:
    sent: int
    ok: int  # answered 200
    seconds: float
    latencies: list[float]
    started: float  # time.time() of the first request, to the millisecond like tokens

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="requests per burst")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0, help="paced phase, messages/s")
    parser.add_argument("--paced-seconds", type=float, default=4.0)
    parser.add_argument("--calm-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=90.0, help="bound on each phase")
    parser.add_argument("--workers", type=int, default=2, help="WORKER_PROCESSES (separate mode)")
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
            "WORKER_PROCESSES": str(args.workers),
        }
        uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]
        uvicorn += ["--log-level", "warning"]
        # As deployed: `yarigai serve`, which in WORKER_MODE=separate starts `yarigai worker`.
        bot_cmd = [sys.executable, "-m", "bot.cli", "serve", "--port", str(bot_port)]
        bare_cmd = [*uvicorn, "--port", str(bare_port), "--app-dir", str(REPO / "bench")]
        bare_cmd += ["line_webhook:bare_app"]
        with (
            _process(fake_cmd, env, workdir, f"http://127.0.0.1:{fake_port}/_fake/stats"),
            _process(bare_cmd, env, workdir, f"http://127.0.0.1:{bare_port}/webhooks/line"),
            _process(bot_cmd, env, workdir, f"http://127.0.0.1:{bot_port}/healthz") as bot,
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
    async with aiohttp.ClientSession(connector=connector) as http:
        # Warm both servers (imports, first connections, SQLite pages) before measuring.
        await _burst(http, bare_url, _users(50), 200, args)
        await _burst(http, bot_url, _users(50), 200, args)
        await _answered(http, fake, 200, args.timeout)

        bare = await _burst(http, bare_url, _users(args.users), args.events, args)
        cpu_before = _cpu_seconds(bot_pids)
        burst = await _burst(http, bot_url, _users(args.users), args.events, args)
        answered = await _answered(http, fake, 200 + burst.ok, args.timeout)
        burst_cpu = _cpu_seconds(bot_pids) - cpu_before
        burst_replies = [r for r in answered if r[1] >= burst.started]
        e2e = len(burst_replies) / (max(r[2] for r in burst_replies) - burst.started)

        paced = await _paced(http, bot_url, _users(args.users), args.rate, args.paced_seconds)
        answered = await _answered(http, fake, len(answered) + paced.ok, args.timeout)
        paced_replies = [r for r in answered if r[1] >= paced.started]

        calm_rate = max(10.0, e2e / 2)
        cpu_before = _cpu_seconds(bot_pids)
        calm = await _paced(http, bot_url, _users(args.users), calm_rate, args.calm_seconds)
        answered = await _answered(http, fake, len(answered) + calm.ok, args.timeout)
        calm_cpu = _cpu_seconds(bot_pids) - cpu_before
        calm_replies = [r for r in answered if r[1] >= calm.started]
        stats = await _stats(http, fake)

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
        f"  bare FastAPI endpoint {bare.rate:7.0f} acks/s  ack p50 {_ms(bare.latencies, 50)}  p99 {_ms(bare.latencies, 99)}"
    )
    print(
        f"  bot /webhooks/line    {burst.rate:7.0f} acks/s  ack p50 {_ms(burst.latencies, 50)}  "
        f"p99 {_ms(burst.latencies, 99)}  = {burst.rate / bare.rate:.2f} of bare"
    )
    print(
        f"  answered end to end   {e2e:7.0f} messages/s ({len(burst_replies)}/{burst.sent} "
        f"answered; reply latency behind the backlog p50 {_ms(_latency(burst_replies), 50)} "
        f"p99 {_ms(_latency(burst_replies), 99)})"
    )
    print(
        f"  bot CPU per message   {burst_cpu / max(1, len(burst_replies)) * 1000:7.2f} ms "
        f"(acknowledge, turn and reply; calm: {calm_cpu / max(1, len(calm_replies)) * 1000:.2f} ms)"
    )
    for name, run, replies in (("paced", paced, paced_replies), ("calm", calm, calm_replies)):
        print(
            f"{name}: {run.rate:.0f} messages/s for {run.seconds:.1f}s: ack p50 "
            f"{_ms(run.latencies, 50)} p99 {_ms(run.latencies, 99)}; reply latency p50 "
            f"{_ms(_latency(replies), 50)} p99 {_ms(_latency(replies), 99)} "
            f"({len(replies)}/{run.sent} answered)"
        )
    failed = (
        bare.sent - bare.ok + burst.sent - burst.ok + paced.sent - paced.ok + calm.sent - calm.ok
    )
    print(
        f"fake LINE API: answers {stats['statuses']}, checked against the spec "
        f"{stats['checked']}, invalid {stats['invalid']}, "
        f"pushes {len(stats['pushed'])}; webhooks not answered 200: {failed}"
    )


async def _burst(
    http: aiohttp.ClientSession, url: str, users: list[str], count: int, args: argparse.Namespace
) -> Run:
    # One iterator shared by every connection: users come round-robin.
    requests = _requests(users, count)
    latencies: list[float] = []
    failures = 0
    started = int(time.time() * 1000) / 1000
    clock = time.perf_counter()
    deadline = clock + args.timeout

    async def worker() -> None:
        nonlocal failures
        for user, text in requests:
            if time.perf_counter() > deadline:
                return
            ok, latency = await _post(http, url, user, text)
            latencies.append(latency)
            failures += not ok

    await asyncio.gather(*(worker() for _ in range(args.connections)))
    return Run(
        len(latencies), len(latencies) - failures, time.perf_counter() - clock, latencies, started
    )


async def _paced(
    http: aiohttp.ClientSession, url: str, users: list[str], rate: float, seconds: float
) -> Run:
    count = int(rate * seconds)
    requests = list(_requests(users, count))
    latencies: list[float] = []
    failures = 0
    tasks: set[asyncio.Task[None]] = set()
    started = int(time.time() * 1000) / 1000
    clock = time.perf_counter()

    async def one(user: str, text: str) -> None:
        nonlocal failures
        ok, latency = await _post(http, url, user, text)
        latencies.append(latency)
        failures += not ok

    for index, (user, text) in enumerate(requests):
        due = clock + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(user, text))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return Run(
        len(latencies), len(latencies) - failures, time.perf_counter() - clock, latencies, started
    )


def _requests(users: list[str], count: int) -> Iterator[tuple[str, str]]:
    """Round-robin over users, each walking SCRIPT (so users' turns interleave)."""
    for index in range(count):
        user = users[index % len(users)]
        yield user, SCRIPT[(index // len(users)) % len(SCRIPT)]


async def _post(http: aiohttp.ClientSession, url: str, user: str, text: str) -> tuple[bool, float]:
    now_ms = int(time.time() * 1000)
    event = {
        "type": "message",
        "mode": "active",
        "timestamp": now_ms,
        "source": {"type": "user", "userId": user},
        "webhookEventId": f"{now_ms:013d}{os.urandom(7).hex()[:13].upper()}",
        "deliveryContext": {"isRedelivery": False},
        "replyToken": mint_reply_token(user),
        "message": {"type": "text", "id": str(now_ms), "quoteToken": "q", "text": text},
    }
    body = json.dumps({"destination": BOT_USER_ID, "events": [event]}, ensure_ascii=False).encode()
    headers = {"content-type": "application/json", "x-line-signature": sign(CHANNEL_SECRET, body)}
    started = time.perf_counter()
    try:
        async with http.post(url, data=body, headers=headers) as answer:
            await answer.read()
            ok = answer.status == 200
    except aiohttp.ClientError:
        ok = False
    return ok, time.perf_counter() - started


async def _stats(http: aiohttp.ClientSession, fake: str) -> dict[str, Any]:
    async with http.get(f"{fake}/_fake/stats") as answer:
        stats: dict[str, Any] = await answer.json()
        return stats


async def _answered(
    http: aiohttp.ClientSession, fake: str, expected: int, patience: float
) -> list[list[Any]]:
    """Replies at the fake LINE API, [chat, token minted, arrived], once `expected` are in
    (or `patience` seconds have passed)."""
    deadline = time.monotonic() + patience
    while True:
        replied: list[list[Any]] = (await _stats(http, fake))["replied"]
        if len(replied) >= expected or time.monotonic() > deadline:
            return replied
        await asyncio.sleep(0.1)


def _latency(replies: list[list[Any]]) -> list[float]:
    return [arrived - minted for _, minted, arrived in replies]


def _users(count: int) -> list[str]:
    return [new_user_id() for _ in range(count)]


def _ms(values: list[float], percentile: int) -> str:
    if not values:
        return "   -  "
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(percentile / 100 * (len(ordered) - 1)))
    return f"{ordered[index] * 1000:6.1f} ms"


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far (Linux /proc; NaN elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def _process(
    command: list[str], env: dict[str, str], cwd: Path, ready: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running and answering at `ready`."""
    process = subprocess.Popen(command, env=env, cwd=cwd)
    try:
        _wait_ready(process, ready)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            method = "GET" if url.endswith(("stats", "healthz")) else "POST"
            urllib.request.urlopen(urllib.request.Request(url, method=method, data=None), timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{process.args} did not start in 30 s")


if __name__ == "__main__":
    main()
