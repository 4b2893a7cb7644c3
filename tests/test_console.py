"""The agent console and API refuse strangers (every route, enumerated), check CSRF on every
form, and render what agents need; through the real app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_app import PASSWORD, AgentApp, agent_app
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from bot.store import AgentStore

PROTECTED_PREFIXES = ("/console", "/api/v1")
# Reachable without signing in, on purpose: the sign-in form itself, and static files.
PUBLIC = {("GET", "/console/login"), ("POST", "/console/login")}
PUBLIC_MOUNTS = {"/console/static"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AgentApp]:
    with agent_app(tmp_path) as served:
        served.add_agent("hanako", "花子")
        served.add_agent("taro", "太郎")
        yield served


def guarded_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route under the console and the API, as the app has them now
    (routers included at any depth, which FastAPI keeps nested)."""
    found = []
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        path = context.path or ""
        if isinstance(context.original_route, Mount):
            assert path in PUBLIC_MOUNTS or not path.startswith(PROTECTED_PREFIXES), path
            continue
        if path.startswith(PROTECTED_PREFIXES):
            found += [(method, path) for method in sorted(context.methods or ())]
    return found


def csrf_of(html: str) -> str:
    matched = re.search(r'name="csrf" value="([^"]+)"', html)
    assert matched, "no CSRF field in the page"
    return matched.group(1)


def sign_in(client: TestClient, name: str = "hanako", password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/console/login").text)
    answer = client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console", headers={"accept": "text/html"}).text)


def fill(path: str, handoff: int) -> str:
    return path.replace("{handoff_id}", str(handoff))


# ---------------------------------------------------------------- refusals


def test_every_console_and_api_route_refuses_strangers(app: AgentApp) -> None:
    handoff = app.waiting_handoff(app.web_user())
    routes = guarded_routes(app.client)
    assert len(routes) >= 14  # the enumeration really found the routers
    stranger = TestClient(app.client.app)  # same app, no cookies, no token

    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = fill(path, handoff)
        for headers in ({}, {"Authorization": "Bearer yg_not-a-real-token"}):
            answer = stranger.request(method, url, headers={"accept": "text/html", **headers})
            assert answer.status_code == 401, (method, path, headers, answer.status_code)
            assert "花子" not in answer.text and "担当者を呼びます" not in answer.text
        if path.startswith("/api/v1"):
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # The sign-in form is open, but posting to it still needs its CSRF token.
    assert (
        stranger.post("/console/login", data={"name": "hanako", "password": PASSWORD}).status_code
        == 403
    )


def test_every_console_form_needs_the_csrf_token(app: AgentApp) -> None:
    handoff = app.waiting_handoff(app.web_user())
    sign_in(app.client)
    posts = [p for m, p in guarded_routes(app.client) if m == "POST" and p.startswith("/console")]
    assert len(posts) >= 4

    for path in posts:
        url = fill(path, handoff)
        for sent in ({}, {"csrf": "wrong"}):
            answer = app.client.post(url, data={"text": "x", **sent}, follow_redirects=False)
            assert answer.status_code == 403, (path, sent, answer.status_code)
        wrong_header = app.client.post(
            url, data={"text": "x"}, headers={"x-csrf-token": "wrong"}, follow_redirects=False
        )
        assert wrong_header.status_code == 403, path
    detail = app.client.get(f"/api/v1/handoffs/{handoff}", headers=app.api("taro")).json()
    assert detail["status"] == "waiting"  # nothing above took effect


def test_tokens_and_sessions_stop_working_when_an_agent_is_disabled(app: AgentApp) -> None:
    sign_in(app.client, "taro")
    assert app.client.get("/api/v1/me", headers=app.api("taro")).json()["display_name"] == "太郎"
    agents = AgentStore(engine=app.runtime.store.engine)

    app.run(lambda: agents.disable("taro"))

    assert app.client.get("/api/v1/me", headers=app.api("taro")).status_code == 401
    assert app.client.get("/console", headers={"accept": "text/html"}).status_code == 401
    assert (
        app.client.get("/api/v1/me", headers={"Authorization": app.tokens["taro"]}).status_code
        == 401
    )


def test_sign_in_refuses_a_wrong_password_and_logout_ends_the_session(app: AgentApp) -> None:
    client = app.client
    token = csrf_of(client.get("/console/login").text)
    wrong = client.post(
        "/console/login", data={"name": "hanako", "password": "guess", "csrf": token}
    )
    assert wrong.status_code == 401 and "名前かパスワードが違います" in wrong.text
    unknown = client.post(
        "/console/login", data={"name": "nobody", "password": PASSWORD, "csrf": token}
    )
    assert unknown.status_code == 401

    csrf = sign_in(client)
    page = client.get("/console", headers={"accept": "text/html"})
    assert page.status_code == 200 and "花子 さん" in page.text
    out = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/console", headers={"accept": "text/html"}).status_code == 401
    # The session cookie is scoped to the console: the web chat and the API never carry it.
    cookie = out.headers.get("set-cookie", "")
    assert "path=/console" in cookie.lower() and "httponly" in cookie.lower()


# ---------------------------------------------------------------- pages and actions


def test_pages_show_the_queue_and_the_summary_and_escape_user_text(app: AgentApp) -> None:
    session = app.web_user()
    app.say(session, "経理")
    handoff = app.waiting_handoff(session)
    app.say(session, "<script>alert('x')</script>")
    sign_in(app.client)

    queue = app.client.get("/console", headers={"accept": "text/html"})
    assert f'href="/console/handoffs/{handoff}"' in queue.text
    assert "対応待ち" in queue.text and "経理" in queue.text
    assert "script-src 'self'" in queue.headers["content-security-policy"]
    assert queue.headers["cache-control"] == "no-store"

    page = app.client.get(f"/console/handoffs/{handoff}", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "<th>お仕事は？</th><td>経理</td>" in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert (
        app.client.get("/console/handoffs/999999", headers={"accept": "text/html"}).status_code
        == 404
    )


def test_forms_work_without_javascript(app: AgentApp) -> None:
    session = app.web_user()
    handoff = app.waiting_handoff(session)
    csrf = sign_in(app.client)
    url = f"/console/handoffs/{handoff}"

    claimed = app.client.post(f"{url}/claim", data={"csrf": csrf}, follow_redirects=False)
    assert (claimed.status_code, claimed.headers["location"]) == (303, url)
    assert "対応を開始しました" in app.client.get(url, headers={"accept": "text/html"}).text
    refused = app.client.post(f"{url}/messages", data={"csrf": csrf, "text": "花子\u0000です"})
    assert refused.status_code == 422  # no store keeps U+0000; nothing was sent
    app.client.post(f"{url}/messages", data={"csrf": csrf, "text": "花子です", "kind": "reply"})
    app.client.post(f"{url}/messages", data={"csrf": csrf, "text": "メモ", "kind": "note"})
    app.client.post(f"{url}/release", data={"csrf": csrf, "outcome": "info_only"})

    history = app.history(session)
    assert history["mode"] == "bot"
    said = [(m["sender"], m.get("text")) for m in history["messages"]]
    assert ("agent", "花子です") in said and ("bot", "おかえりなさい") in said
    assert "メモ" not in [text for _, text in said]
    assert [text for sender, text in said if sender == "agent"] == ["花子です"]


def test_console_actions_answer_json_to_the_pages_script(app: AgentApp) -> None:
    handoff = app.waiting_handoff(app.web_user())
    app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("taro"))
    csrf = sign_in(app.client, "hanako")
    ajax = {"accept": "application/json", "x-csrf-token": csrf}

    taken = app.client.post(f"/console/handoffs/{handoff}/claim", headers=ajax)
    assert taken.status_code == 409
    assert taken.json() == {"ok": False, "message": "太郎さんが対応中です。"}
    not_mine = app.client.post(
        f"/console/handoffs/{handoff}/messages", data={"text": "横から"}, headers=ajax
    )
    assert not_mine.status_code == 403
    note = app.client.post(
        f"/console/handoffs/{handoff}/messages",
        data={"text": "見ました", "kind": "note"},
        headers=ajax,
    )
    assert note.json() == {"ok": True, "message": "メモを残しました。"}


def test_openapi_describes_the_agent_api_with_its_security_scheme(app: AgentApp) -> None:
    schema = app.client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["AgentToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    agent_paths = {p for p in schema["paths"] if p.startswith("/api/v1")}
    assert {
        "/api/v1/handoffs",
        "/api/v1/handoffs/{handoff_id}",
        "/api/v1/handoffs/{handoff_id}/claim",
        "/api/v1/handoffs/{handoff_id}/messages",
        "/api/v1/handoffs/{handoff_id}/notes",
        "/api/v1/handoffs/{handoff_id}/release",
    } <= agent_paths
    for path in agent_paths:
        for operation in schema["paths"][path].values():
            assert operation["security"] == [{"AgentToken": []}], path
    assert not [p for p in schema["paths"] if p.startswith("/console")]


# ---------------------------------------------------------------- a shift's pages


def test_admins_keep_saved_replies_and_unknown_variables_are_refused(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        app.add_agent("boss", "管理者", admin=True)
        app.add_agent("hanako", "花子")
        csrf = sign_in(app.client, "boss")

        bad = app.client.post(
            "/console/replies",
            data={"csrf": csrf, "name": "挨拶", "body": "{{ user }}さん、{{name}}です"},
        )
        assert bad.status_code == 422
        assert "使えない変数があります: user" in bad.text
        assert "{{ user }}さん、{{name}}です" in bad.text  # the draft is kept, nothing lost
        saved = app.client.post(
            "/console/replies",
            data={"csrf": csrf, "name": "挨拶", "body": "担当の{{name}}です。"},
            follow_redirects=False,
        )
        assert saved.status_code == 303
        assert "担当の{{name}}です。" in app.client.get("/console/replies").text

        app.client.post("/console/logout", data={"csrf": csrf})
        csrf = sign_in(app.client, "hanako")
        refused = app.client.post("/console/replies", data={"csrf": csrf, "name": "x", "body": "y"})
        assert refused.status_code == 403
        # Every agent picks it in a request, filled in with their own name.
        session = app.web_user()
        handoff = app.waiting_handoff(session)
        page = app.client.get(f"/console/handoffs/{handoff}", headers={"accept": "text/html"})
        assert 'data-text="担当の花子です。"' in page.text


def test_history_finds_finished_requests_by_agent_and_outcome(app: AgentApp) -> None:
    done = []
    for outcome in ("booked", "follow_up"):
        handoff = app.waiting_handoff(app.web_user())
        url = f"/api/v1/handoffs/{handoff}"
        app.client.post(f"{url}/claim", headers=app.api("hanako"))
        app.client.post(f"{url}/release", json={"outcome": outcome}, headers=app.api("hanako"))
        done.append(handoff)
    app.waiting_handoff(app.web_user())  # still open: not history
    sign_in(app.client)

    def found(**query: str) -> list[int]:
        page = app.client.get("/console/history", params=query)
        assert page.status_code == 200
        return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', page.text)]

    assert found() == done[::-1]
    assert found(outcome="booked") == [done[0]]
    assert found(who="taro") == []
    assert found(since="2025-04-01", until="2025-04-01") == done[::-1]  # the clock's Tuesday
    assert found(since="2025-04-02") == []
    assert found(since="", until="", who="", outcome="") == done[::-1]  # the form, left empty
    assert app.client.get("/console/history", params={"since": "4月1日"}).status_code == 422
    assert app.client.get("/console/history", params={"outcome": "bogus"}).status_code == 422
