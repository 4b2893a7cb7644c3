"""Rates (429 with Retry-After) and sessions that end on the server, as a client meets them:
web chats per address, requests for an agent, console sign-in (per address and per name, with
growing delays and a lockout `yarigai agents unlock` lifts), the agent API per token."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from agent_app import PASSWORD, agent_app
from click.testing import CliRunner
from test_console import csrf_of, sign_in

from bot.cli.main import main
from bot.core.service import HANDOFF_BUSY
from bot.http.console.auth import new_token
from bot.store import AgentStore
from bot.store.schema import conversations

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def count_conversations(app: Any) -> int:
    async def count() -> int:
        async with app.runtime.store.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(conversations)
            return int((await connection.execute(query)).scalar_one())

    return int(app.run(count))


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    result = CliRunner().invoke(main, ["agents", *args], env=env)
    return result.exit_code, result.stdout + result.stderr


def try_password(client: Any, name: str, password: str) -> Any:
    token = csrf_of(client.get("/console/login").text)
    return client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf": token},
        follow_redirects=False,
    )


# ---------------------------------------------------------------- the web chat


def test_new_web_chats_are_limited_per_address_and_store_nothing(tmp_path: Path) -> None:
    with agent_app(tmp_path, rate_chat_sessions="3/minute") as app:
        started = [app.client.post("/api/chat/sessions", json={}) for _ in range(3)]
        assert [s.status_code for s in started] == [200, 200, 200]
        assert started[0].json()["messages"][0]["text"] == "こんにちは、テスト社です"
        refused = app.client.post("/api/chat/sessions", json={})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Page loads and scripts leave no rows: a chat is stored with its first message.
        assert count_conversations(app) == 0
        session = started[0].json()["session"]
        assert app.client.get(f"/api/chat/sessions/{session}/messages").status_code == 404
        reply = app.say(session, "会計をやってます")
        assert reply["messages"][-1]["state"] == "pains"
        assert count_conversations(app) == 1
        history = app.history(session)["messages"]
        assert [m.get("text") for m in history[:2]] == ["こんにちは、テスト社です", "お仕事は？"]
        # A session id we did not issue is unknown, not created.
        made_up = session[:-1] + ("A" if session[-1] != "A" else "B")
        answer = app.client.post(f"/api/chat/sessions/{made_up}/messages", json={"text": "x"})
        assert answer.status_code == 404
        assert count_conversations(app) == 1


def test_requests_for_an_agent_are_limited_per_address_and_chat(tmp_path: Path) -> None:
    with agent_app(tmp_path, rate_handoffs="2/hour") as app:
        first, second, third = app.web_user(), app.web_user(), app.web_user()
        assert app.say(first, "担当者と話したい")["mode"] == "waiting"
        assert app.say(second, "担当者と話したい")["mode"] == "waiting"
        refused = app.say(third, "担当者と話したい")
        assert refused["mode"] == "bot"
        assert [m["text"] for m in refused["messages"]] == [HANDOFF_BUSY]
        waiting = [h for h in app.desk_queue() if h["status"] == "waiting"]
        assert len(waiting) == 2
        # The refused chat goes on with the bot where it was.
        assert app.say(third, "会計をやってます")["messages"][-1]["state"] == "pains"


# ---------------------------------------------------------------- the console


def test_console_sign_in_is_limited_per_address(tmp_path: Path) -> None:
    with agent_app(tmp_path, rate_login="3/minute") as app:
        app.add_agent("hanako", "花子")
        answers = [try_password(app.client, "nobody", "wrong password") for _ in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 401]
        refused = try_password(app.client, "hanako", PASSWORD)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "試行が多すぎます" in refused.text


def test_wrong_passwords_slow_down_then_lock_a_name_until_unlocked(tmp_path: Path) -> None:
    with agent_app(tmp_path, login_lockout_after=4) as app:
        app.add_agent("hanako", "花子")
        client = app.client
        assert [try_password(client, "hanako", "wrong").status_code for _ in range(3)] == [
            401,
            401,
            401,
        ]
        # The third wrong password in a row: the next try waits (growing delays).
        early = try_password(client, "hanako", PASSWORD)
        assert early.status_code == 429 and early.headers["retry-after"] == "1"
        agents = AgentStore(engine=app.runtime.store.engine)

        async def wind_back() -> None:  # as if the second had passed
            async with app.runtime.store.engine.begin() as connection:
                from bot.store.schema import agents as table

                past = datetime.now(UTC) - timedelta(minutes=5)
                await connection.execute(sa.update(table).values(last_failed_at=past))

        app.run(wind_back)
        assert try_password(client, "hanako", "wrong").status_code == 401  # the fourth
        app.run(wind_back)
        locked = try_password(client, "hanako", PASSWORD)
        assert locked.status_code == 403 and "ロックされています" in locked.text

        code, out = cli(tmp_path, "unlock", "hanako")
        assert code == 0 and "unlocked agent hanako" in out
        assert try_password(client, "hanako", PASSWORD).status_code == 303
        found = app.run(lambda: agents.get("hanako"))
        assert found is not None and found.failed_logins == 0


def test_logging_out_ends_the_session_on_the_server(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        app.add_agent("hanako", "花子")
        csrf = sign_in(app.client)
        kept = dict(app.client.cookies)  # what a thief would have copied
        assert app.client.get("/console", headers={"accept": "text/html"}).status_code == 200
        out = app.client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        from fastapi.testclient import TestClient

        thief = TestClient(app.client.app, cookies=kept)
        answer = thief.get("/console", headers={"accept": "text/html"})
        assert answer.status_code == 401


# ---------------------------------------------------------------- the agent API


def test_agent_api_is_limited_per_token(tmp_path: Path) -> None:
    with agent_app(tmp_path, rate_agent_api="3/minute") as app:
        app.add_agent("hanako", "花子")
        answers = [app.client.get("/api/v1/me", headers=app.api("hanako")) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        app.add_agent("taro", "太郎")  # another token has its own budget
        assert app.client.get("/api/v1/me", headers=app.api("taro")).status_code == 200


def test_tokens_expire_and_can_be_revoked(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        app.add_agent("hanako", "花子")
        agents = AgentStore(engine=app.runtime.store.engine)
        old, hashed = new_token()
        yesterday = datetime.now(UTC) - timedelta(days=1)
        app.run(lambda: agents.add_token("hanako", token_hash=hashed, expires_at=yesterday))
        stale = app.client.get("/api/v1/me", headers={"Authorization": f"Bearer {old}"})
        assert stale.status_code == 401

        code, out = cli(tmp_path, "token", "hanako", "--days", "30")
        assert code == 0
        fresh = out.splitlines()[0]
        assert "until" in out
        me = app.client.get("/api/v1/me", headers={"Authorization": f"Bearer {fresh}"})
        assert me.status_code == 200
        code, out = cli(tmp_path, "token", "hanako", "--revoke")
        assert code == 0 and "revoked 3 token(s) of hanako" in out
        for token in (fresh, app.tokens["hanako"]):
            gone = app.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert gone.status_code == 401


def test_limits_are_shared_through_redis_when_configured(tmp_path: Path) -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis at {REDIS_URL} does not answer: {error}")
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({error}); set TEST_REDIS_URL")
    settings: dict[str, Any] = {"redis_url": REDIS_URL, "rate_agent_api": "2/minute"}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        agent_app(tmp_path / "one", **settings) as one,
        agent_app(tmp_path / "two", **settings) as two,
    ):
        token = one.add_agent("hanako", "花子")
        two.tokens["hanako"] = token

        async def same_token() -> None:  # the second app's database knows the same token
            agents = AgentStore(engine=two.runtime.store.engine)
            from agent_app import password_hash

            from bot.http.console.auth import token_hash

            await agents.add("hanako", password_hash=password_hash(), display_name="花子")
            await agents.add_token("hanako", token_hash=token_hash(token))

        two.run(same_token)
        assert one.client.get("/api/v1/me", headers=one.api("hanako")).status_code == 200
        assert two.client.get("/api/v1/me", headers=two.api("hanako")).status_code == 200
        # The third call, to either process, is over the shared limit.
        refused = one.client.get("/api/v1/me", headers=one.api("hanako"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_ids_past_the_database_are_refused_not_a_500(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        app.add_agent("hanako", "花子")
        for method, path in (
            ("POST", "/api/v1/handoffs/123456789012345678901/claim"),
            ("GET", "/api/v1/handoffs/9223372036854775808"),
        ):
            answer = app.client.request(method, path, headers=app.api("hanako"))
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["error"] == "invalid" and answer.json()["details"]
        biggest = app.client.get("/api/v1/handoffs/9223372036854775807", headers=app.api("hanako"))
        assert biggest.status_code == 404
        assert biggest.json() == {"error": "not_found", "message": "no such handoff"}
