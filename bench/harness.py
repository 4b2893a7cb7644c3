"""What the LINE benchmarks share: the bare endpoint to compare with, signed load, the fake LINE
API's record of replies, percentiles, CPU time and child processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
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

# tests/ is not a package on the path by default; the benchmarks take these from here.
from fakes.line_api import (  # noqa: E402
    ACCESS_TOKEN,
    BOT_USER_ID,
    CHANNEL_SECRET,
    mint_reply_token,
    new_user_id,
    sign,
)
from fakes.processes import children, free_port  # noqa: E402

__all__ = ["ACCESS_TOKEN", "CHANNEL_SECRET", "children", "free_port"]

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
    """The floor to compare with: what any LINE endpoint must do before its own work (read the
    body, check its signature, parse the JSON), then answer 200."""
    body = await request.body()
    expected = base64.b64encode(
        hmac.new(CHANNEL_SECRET.encode(), body, hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-line-signature", "")):
        return Response(status_code=401)
    json.loads(body)
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


def users(count: int) -> list[str]:
    return [new_user_id() for _ in range(count)]


def walk(people: list[str], count: int) -> Iterator[tuple[str, str]]:
    """Round-robin over `people`, each walking SCRIPT (so users' turns interleave)."""
    for index in range(count):
        user = people[index % len(people)]
        yield user, SCRIPT[(index // len(people)) % len(SCRIPT)]


def newcomers(count: int) -> Iterator[tuple[str, str]]:
    """Each message from a new user: the costly first turn (a conversation created)."""
    for _ in range(count):
        yield new_user_id(), SCRIPT[0]


async def post(http: aiohttp.ClientSession, url: str, user: str, text: str) -> tuple[bool, float]:
    """One signed webhook with one text event; (answered 200, seconds to the answer)."""
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


async def burst(
    http: aiohttp.ClientSession,
    url: str,
    requests: Iterator[tuple[str, str]],
    *,
    connections: int,
    patience: float,
) -> Run:
    """`requests` as fast as `connections` closed-loop senders allow."""
    latencies: list[float] = []
    failures = 0
    started = int(time.time() * 1000) / 1000
    clock = time.perf_counter()
    deadline = clock + patience

    async def sender() -> None:
        nonlocal failures
        for user, text in requests:  # one iterator shared by every sender
            if time.perf_counter() > deadline:
                return
            ok, latency = await post(http, url, user, text)
            latencies.append(latency)
            failures += not ok

    await asyncio.gather(*(sender() for _ in range(connections)))
    seconds = time.perf_counter() - clock
    return Run(len(latencies), len(latencies) - failures, seconds, latencies, started)


async def paced(
    http: aiohttp.ClientSession, url: str, requests: list[tuple[str, str]], rate: float
) -> Run:
    """Open loop: request i leaves at i / rate seconds whatever the answers (as LINE sends)."""
    latencies: list[float] = []
    failures = 0
    tasks: set[asyncio.Task[None]] = set()
    started = int(time.time() * 1000) / 1000
    clock = time.perf_counter()

    async def one(user: str, text: str) -> None:
        nonlocal failures
        ok, latency = await post(http, url, user, text)
        latencies.append(latency)
        failures += not ok

    for index, (user, text) in enumerate(requests):
        delay = clock + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(user, text))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - clock
    return Run(len(latencies), len(latencies) - failures, seconds, latencies, started)


class Replies:
    """The replies the fake LINE API received, [chat, token minted, arrived], fetched a page
    at a time (a poll does not fetch thousands again)."""

    def __init__(self, http: aiohttp.ClientSession, fake: str) -> None:
        self.http = http
        self.fake = fake
        self.seen: list[list[Any]] = []
        # Messages pushed, [chat, arrived]: a reply whose token went stale behind a backlog is
        # pushed; it answers a message too (without a token's age to measure latency by).
        self.pushed: list[list[Any]] = []

    async def stats(self) -> dict[str, Any]:
        query = f"since={len(self.seen)}&pushed_since={len(self.pushed)}"
        async with self.http.get(f"{self.fake}/_fake/stats?{query}") as answer:
            stats: dict[str, Any] = await answer.json()
        self.seen += stats["replied"]
        self.pushed += stats["pushed"]
        return stats

    @property
    def answered(self) -> int:
        return len(self.seen) + len(self.pushed)

    async def until(self, count: int, patience: float) -> list[list[Any]]:
        """All replies so far, once `count` messages are answered, by reply or by push (or
        `patience` seconds have passed)."""
        deadline = time.monotonic() + patience
        while True:
            await self.stats()
            if self.answered >= count or time.monotonic() > deadline:
                return self.seen
            await asyncio.sleep(0.1)

    def pushed_since(self, started: float) -> list[list[Any]]:
        return [p for p in self.pushed if p[1] >= started]

    def since(self, started: float) -> list[list[Any]]:
        return [r for r in self.seen if r[1] >= started]


def latencies(replies: list[list[Any]]) -> list[float]:
    """Event sent (its reply token minted) -> reply request at the fake LINE API, seconds."""
    return [arrived - minted for _, minted, arrived in replies]


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(values: list[float], q: int) -> str:
    return "   -  " if not values else f"{percentile(values, q) * 1000:6.1f} ms"


def cpu_seconds(pids: list[int]) -> float:
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
def process(
    command: list[str], env: dict[str, str], cwd: Path, ready: str | None, within: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running (and answering at `ready`, when given)."""
    started = subprocess.Popen(command, env=env, cwd=cwd)
    try:
        if ready is not None:
            wait_ready(started, ready, within)
        yield started
    finally:
        started.terminate()
        try:
            started.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()


def wait_ready(started: subprocess.Popen[bytes], url: str, within: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if started.poll() is not None:
            raise SystemExit(f"{started.args} exited with {started.returncode}")
        try:
            method = "GET" if url.endswith(("stats", "healthz")) else "POST"
            urllib.request.urlopen(urllib.request.Request(url, method=method, data=None), timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{started.args} did not start in {within:.0f} s")
