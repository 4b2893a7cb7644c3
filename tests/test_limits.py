"""Limits at the edge, as a client meets them: body sizes (413 before the rest is read), absurd
but signed input (never a 500), rates (429 with Retry-After), through the real app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from agent_app import password_hash
from fakes.line_api import ACCESS_TOKEN, BOT_USER_ID, CHANNEL_SECRET, FakeLineApi, sign
from fakes.served import serving_app
from fakes.slack_api import FakeSlackApi, SlackEvents
from fastapi import FastAPI
from pydantic import SecretStr

from bot.config import Settings
from bot.http.app import create_app
from bot.http.console.auth import new_token
from bot.store import AgentStore

ROOT = Path(__file__).parent.parent
SLACK_SECRET = "fake-signing-secret-abcdef"
KiB, MiB = 1024, 1024 * 1024


@dataclass
class Served:
    app: FastAPI
    url: str
    token: str  # an agent API token (agent "hanako")


@pytest.fixture
def line_api() -> AsyncIterator[FakeLineApi]:
    with FakeLineApi(validate=False) as fake:
        yield fake


@pytest.fixture
def slack_api() -> AsyncIterator[FakeSlackApi]:
    with FakeSlackApi() as fake:
        yield fake


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "mini.yaml").write_text(
        (ROOT / "tests" / "flows" / "mini.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "flows_dir": flows,
        "default_flow": "mini",
        "session_secret": "test-session-secret",
        **overrides,
    }
    return Settings(**values)


def channel_settings(
    tmp_path: Path, line_api: FakeLineApi, slack_api: FakeSlackApi, **overrides: Any
) -> Settings:
    return settings_for(
        tmp_path,
        line_channel_secret=CHANNEL_SECRET,
        line_channel_access_token=ACCESS_TOKEN,
        line_api_base_url=line_api.url,
        slack_signing_secret=SecretStr(SLACK_SECRET),
        slack_bot_token=SecretStr(slack_api.token),
        slack_api_base_url=slack_api.base_url,
        **overrides,
    )


@pytest.fixture
async def served(
    tmp_path: Path, line_api: FakeLineApi, slack_api: FakeSlackApi
) -> AsyncIterator[Served]:
    app = create_app(channel_settings(tmp_path, line_api, slack_api))
    async with serving_app(app) as url:
        agents = AgentStore(engine=app.state.runtime.store.engine)
        token, hashed = new_token()
        await agents.add("hanako", password_hash=password_hash(), display_name="花子")
        await agents.add_token("hanako", token_hash=hashed, label="test")
        yield Served(app=app, url=url, token=token)


async def post_chunked(
    url: str,
    path: str,
    *,
    chunk: int,
    most: int,
    headers: dict[str, str] | None = None,
) -> tuple[int, int]:
    """POST a chunked body of up to `most` bytes, a chunk at a time, stopping as soon as the
    server answers; (status, bytes sent by then)."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = asyncio.create_task(reader.readline())
    sent = 0
    try:
        while sent < most and not answer.done():
            piece = b" " * chunk  # JSON whitespace: a valid prefix of any document
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += chunk
            await asyncio.sleep(0.005)  # time for the server to read and answer
        status_line = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    return int(status_line.split()[1]), sent


async def post_declared(url: str, path: str, length: int) -> int:
    """POST that declares `length` bytes and sends none: answered without waiting for them?"""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1])


# ---------------------------------------------------------------- bodies


async def test_oversized_bodies_get_413_before_the_rest_is_read(served: Served) -> None:
    """A 50 MB body is refused after about the limit: the server answers while the client
    has sent a small part of it, and reads no further."""
    auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    json_type = {"Content-Type": "application/json"}
    session = "a" * 24
    cases = [
        (f"/api/chat/sessions/{session}/messages", json_type, 64 * KiB, 16 * KiB),
        ("/api/v1/handoffs/1/notes", auth, 64 * KiB, 16 * KiB),
        (
            "/console/login",
            {"Content-Type": "application/x-www-form-urlencoded"},
            64 * KiB,
            16 * KiB,
        ),
        ("/webhooks/line", json_type, 1 * MiB, 64 * KiB),
        ("/slack/events", json_type, 3 * MiB, 256 * KiB),
    ]
    for path, headers, limit, chunk in cases:
        started = time.monotonic()
        status, sent = await post_chunked(
            served.url, path, chunk=chunk, most=50 * MiB, headers=headers
        )
        assert status == 413, path
        # Answered once the limit was passed, long before the 50 MB.
        assert limit < sent <= limit + 16 * chunk, (path, sent)
        assert time.monotonic() - started < 10
        assert await post_declared(served.url, path, 50 * MiB) == 413, path


async def test_bodies_under_the_limits_still_go_through(served: Served) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=served.url) as client:
        started = await client.post("/api/chat/sessions", json={})
        assert started.status_code == 200
        session = started.json()["session"]
        padded = b'{"text": "\xe7\xb5\x8c\xe7\x90\x86"' + b" " * (60 * KiB) + b"}"
        reply = await client.post(
            f"/api/chat/sessions/{session}/messages",
            content=padded,
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 200, reply.text
        body = json.dumps({"destination": BOT_USER_ID, "events": []}).encode()
        body += b" " * (900 * KiB)
        line = await client.post(
            "/webhooks/line",
            content=body,
            headers={"X-Line-Signature": sign(CHANNEL_SECRET, body)},
        )
        assert line.status_code == 200, line.text
        slack = SlackEvents(SLACK_SECRET)
        challenge = json.dumps({"type": "url_verification", "challenge": "c", "token": "t"})
        challenge += " " * (2 * MiB)
        verified = await client.post(
            "/slack/events", content=challenge.encode(), headers=slack.headers(challenge)
        )
        assert verified.status_code == 200, verified.text
