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


# ---------------------------------------------------------------- absurd, but signed


def line_event(user: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": f"01ABSURD{time.monotonic_ns()}",
        "deliveryContext": {"isRedelivery": False},
        "replyToken": "r" * 32,
        "message": {"type": "text", "id": "1", "quoteToken": "q", "text": "経理です"},
    }
    event.update(fields)
    return event


async def post_line(client: Any, document: Any, *, raw: bytes | None = None) -> Any:
    body = raw if raw is not None else json.dumps(document, ensure_ascii=False).encode()
    return await client.post(
        "/webhooks/line",
        content=body,
        headers={
            "X-Line-Signature": sign(CHANNEL_SECRET, body),
            "Content-Type": "application/json",
        },
    )


async def inbox_rows(served: Served) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from bot.store.schema import inbox

    async with served.app.state.runtime.store.engine.connect() as connection:
        rows = await connection.execute(sa.select(inbox).order_by(inbox.c.id))
        return [dict(row._mapping) for row in rows]


async def test_absurd_signed_line_input_is_never_a_500(served: Served) -> None:
    import httpx

    user = "U" + "1" * 32
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        nested = b'{"destination": "x", "events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        answer = await post_line(client, None, raw=nested)
        assert answer.status_code == 400 and answer.json() == {"error": "body is nested too deeply"}

        # Times out of range (10**20 ms, a float, a bool): skipped, the others recorded.
        events = [
            line_event(user, timestamp=10**20),
            line_event(user, timestamp=1e20),
            line_event(user, timestamp=True),
            line_event(user, timestamp=-(10**20)),
        ]
        document = {"destination": BOT_USER_ID, "events": events}
        assert (await post_line(client, document)).status_code == 200
        assert await inbox_rows(served) == []

        # 900 KB of text: clipped to 2,000 characters before anything reads it.
        long = line_event(user, message={"type": "text", "id": "2", "quoteToken": "q"})
        long["message"]["text"] = "経" * 300_000
        started = time.monotonic()
        answer = await post_line(client, {"destination": BOT_USER_ID, "events": [long]})
        assert answer.status_code == 200
        await served.app.state.runtime.worker.idle()
        assert time.monotonic() - started < 10
        (row,) = await inbox_rows(served)
        assert len(row["payload"]["content"]["text"]) == 2000
        assert row["processed_at"] is not None and row["error"] is None

        # Postback data longer than LINE allows, and labels past any button of ours.
        huge = line_event(user, type="postback", postback={"data": "x" * 5000})
        long_choice = line_event(
            user, type="postback", postback={"data": json.dumps({"s": "q", "c": "c" * 250})}
        )
        document = {"destination": BOT_USER_ID, "events": [huge, long_choice]}
        assert (await post_line(client, document)).status_code == 200
        await served.app.state.runtime.worker.idle()
        rows = await inbox_rows(served)
        assert rows[1]["payload"]["content"] == {"kind": "ignored", "type": "postback/oversized"}
        assert len(rows[2]["payload"]["content"]["choice"]) == 200
        assert all(r["error"] is None for r in rows)


async def test_line_events_for_another_bot_are_ignored(served: Served) -> None:
    import httpx

    user = "U" + "2" * 32
    async with httpx.AsyncClient(base_url=served.url) as client:
        foreign = {"destination": "U" + "f" * 32, "events": [line_event(user)]}
        assert (await post_line(client, foreign)).status_code == 200
        assert await inbox_rows(served) == []
        ours = {"destination": BOT_USER_ID, "events": [line_event(user)]}
        assert (await post_line(client, ours)).status_code == 200
        assert len(await inbox_rows(served)) == 1


async def test_line_bot_user_id_can_be_set(
    tmp_path: Path, line_api: FakeLineApi, slack_api: FakeSlackApi
) -> None:
    import httpx

    mine = "U" + "9" * 32
    app = create_app(channel_settings(tmp_path, line_api, slack_api, line_bot_user_id=mine))
    async with serving_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        user = "U" + "3" * 32
        default = {"destination": BOT_USER_ID, "events": [line_event(user)]}
        assert (await post_line(client, default)).status_code == 200
        async with app.state.runtime.store.engine.connect() as connection:
            import sqlalchemy as sa

            from bot.store.schema import inbox

            assert (
                await connection.execute(sa.select(sa.func.count()).select_from(inbox))
            ).scalar() == 0
        set_ = {"destination": mine, "events": [line_event(user)]}
        assert (await post_line(client, set_)).status_code == 200


async def test_absurd_signed_slack_input_is_never_a_500(served: Served) -> None:
    import httpx

    slack = SlackEvents(SLACK_SECRET)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:

        async def post(body: str, *, form: bool = False) -> httpx.Response:
            kind = "application/x-www-form-urlencoded" if form else "application/json"
            headers = slack.headers(body, content_type=kind)
            return await client.post("/slack/events", content=body.encode(), headers=headers)

        nested = '{"type": "event_callback", "event": ' + "[" * 200_000 + "]" * 200_000 + "}"
        assert (await post(nested)).status_code == 400

        for ts in ("inf", "nan", "1e20", "-1e20", "abc"):
            dm = slack.dm("U0USER01", "こんにちは", "1700000000.000100")
            body = json.loads(slack.event_callback(dm))
            body["event"] = {**dm, "ts": ts, "event_ts": ts}
            assert (await post(json.dumps(body))).status_code == 200, ts

        def click(value: Any, action_ts: str = "1700000000.000100", text: str = "経理") -> str:
            from urllib.parse import urlencode

            payload = {
                "type": "block_actions",
                "user": {"id": "U0USER01"},
                "channel": {"id": "D0USER01"},
                "container": {"channel_id": "D0USER01", "message_ts": "1700000000.000001"},
                "message": {"ts": "1700000000.000001", "text": "お仕事は？"},
                "actions": [
                    {
                        "action_id": "yarigai.choice.0",
                        "value": value,
                        "text": {"type": "plain_text", "text": text},
                        "action_ts": action_ts,
                    }
                ],
            }
            return urlencode({"payload": json.dumps(payload)})

        cases = [
            click(json.dumps({"s": "role", "c": "keiri"}), action_ts="inf"),
            click(json.dumps({"s": "role", "c": "k" * 5000})),
            click(json.dumps({"s": "r" * 5000, "c": "keiri"})),
            click(json.dumps({"s": "role", "c": "keiri", "l": "ラ" * 5000})),
            click(json.dumps([1, 2])),
            click(12),
            click(json.dumps({"s": "role", "c": "keiri"}), text="ラ" * 5000),
        ]
        for body in cases:
            assert (await post(body, form=True)).status_code == 200
        await served.app.state.runtime.worker.idle()
        rows = await inbox_rows(served)
        # What was recorded has labels within bounds; nothing failed.
        assert all(r["error"] is None for r in rows)
        for row in rows:
            event = row["payload"].get("event") or {}
            assert len(event.get("label") or "") <= 200
            assert len(event.get("choice") or "") <= 200


async def test_deeply_nested_json_to_our_apis_is_a_400(served: Served) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=served.url) as client:
        nested = b"[" * 30_000 + b"]" * 30_000
        for path in (f"/api/chat/sessions/{'a' * 24}/messages", "/api/v1/handoffs/1/notes"):
            answer = await client.post(
                path,
                content=nested,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {served.token}",
                },
            )
            assert answer.status_code in (400, 422), (path, answer.status_code)


def test_every_413_has_the_one_error_shape(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings_for(tmp_path))) as client:
        big = b"x" * (70 * KiB)
        for path in ("/api/chat/sessions", f"/api/chat/sessions/{'a' * 24}/messages"):
            answer = client.post(path, content=big, headers={"Content-Type": "application/json"})
            assert answer.status_code == 413, path
            assert answer.json() == {"error": "too_large", "message": "Content Too Large"}, path
