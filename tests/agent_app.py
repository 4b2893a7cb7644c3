"""The real app with agent accounts, for the handoff, console and agent API tests.

`AgentApp` wraps a TestClient (the app's own event loop runs in its portal thread) and adds
what tests need around it: agents with tokens, a web chat user, and a settable clock for the
handoff desk (time is data: the desk reads `desk.clock`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient

from bot.config import Settings
from bot.handoff.desk import HandoffDesk
from bot.http.app import create_app
from bot.http.console.auth import hash_password, new_token
from bot.store import AgentStore
from bot.wiring import Runtime

FLOWS = Path(__file__).parent / "flows"
PASSWORD = "correct horse battery"
# A Tuesday, 10:00 in Tokyo: inside the default agent hours.
TUESDAY_10_JST = datetime(2025, 4, 1, 1, 0, tzinfo=UTC)

T = TypeVar("T")


@dataclass
class Clock:
    now: datetime = TUESDAY_10_JST

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class AgentApp:
    client: TestClient
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime  # type: ignore[attr-defined]
        return runtime

    @property
    def desk(self) -> HandoffDesk:
        return self.runtime.desk

    def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the app's event loop and wait for it."""
        portal = self.client.portal
        assert portal is not None

        async def call() -> T:
            return await make()

        return portal.call(call)

    def settle(self) -> None:
        """Wait for background work (agent surface notifications) to finish."""
        self.run(self.runtime.worker.idle)

    def add_agent(self, name: str, display_name: str, *, admin: bool = False) -> str:
        """Create an agent with PASSWORD and an API token; returns the token."""
        agents = AgentStore(engine=self.runtime.store.engine)
        token, hashed = new_token()

        async def add() -> None:
            await agents.add(
                name, password_hash=password_hash(), display_name=display_name, admin=admin
            )
            await agents.add_token(name, token_hash=hashed, label="test")

        self.run(add)
        self.tokens[name] = token
        return token

    def api(self, agent: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[agent]}"}

    def web_user(self) -> str:
        """A new web chat session; returns its id."""
        session: str = self.client.post("/api/chat/sessions", json={}).json()["session"]
        return session

    def say(self, session: str, text: str) -> dict[str, Any]:
        answer = self.client.post(f"/api/chat/sessions/{session}/messages", json={"text": text})
        assert answer.status_code == 200, answer.text
        reply: dict[str, Any] = answer.json()
        self.settle()
        return reply

    def history(self, session: str, after: int = 0) -> dict[str, Any]:
        answer = self.client.get(f"/api/chat/sessions/{session}/messages", params={"after": after})
        assert answer.status_code == 200, answer.text
        history: dict[str, Any] = answer.json()
        return history

    def waiting_handoff(self, session: str) -> int:
        """Ask for an agent as `session`; returns the handoff id."""
        reply = self.say(session, "担当者と話したい")
        assert reply["mode"] == "waiting", reply
        handoffs = [h for h in self.desk_queue() if h["status"] == "waiting"]
        handoff_id: int = handoffs[-1]["id"]
        return handoff_id

    def desk_queue(self) -> list[dict[str, Any]]:
        if not self.tokens:
            self.add_agent("queue-reader", "受付")
        name = next(iter(self.tokens))
        answer = self.client.get("/api/v1/handoffs", headers=self.api(name))
        assert answer.status_code == 200, answer.text
        queue: list[dict[str, Any]] = answer.json()
        return queue


@cache
def password_hash() -> str:
    """argon2 is slow by design: hash the test password once per run."""
    return hash_password(PASSWORD)


@contextmanager
def agent_app(tmp_path: Path, *, runtime_clock: Any = None, **overrides: Any) -> Iterator[AgentApp]:
    """`runtime_clock`: the `Clock` port the runtime's timers and booking desk read (the
    handoff desk reads `AgentApp.clock`)."""
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "mini.yaml").write_text(
        (FLOWS / "mini.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "flows_dir": flows,
        "default_flow": "mini",
        "session_secret": "test-session-secret",
        **overrides,
    }
    clock = Clock()
    with TestClient(create_app(Settings(**values), clock=runtime_clock)) as client:
        app = AgentApp(client=client, clock=clock)
        app.desk.clock = clock
        yield app
