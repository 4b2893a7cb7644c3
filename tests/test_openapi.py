"""The OpenAPI document is true: schemathesis generates requests for every documented
operation (a short run, seeded so it is the same every time), valid and invalid ones, sends
them to the app in process with an (admin) agent token, and checks every answer with every
check schemathesis has (its default, as `--checks all`): no 500, statuses, headers such as
`Allow`, bodies and content types as documented, invalid input refused, valid input accepted."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import schemathesis
from agent_app import FLOWS, password_hash
from hypothesis import HealthCheck, settings

from bot.config import Settings
from bot.http.app import create_app
from bot.http.console.auth import new_token
from bot.store import AgentStore, SqlStore

_HERE = Path(tempfile.mkdtemp(prefix="yarigai-openapi-"))
_DATABASE = f"sqlite:///{_HERE / 'db.sqlite'}"
TOKEN, _HASH = new_token()


async def _agent() -> None:
    store = await SqlStore.open(_DATABASE)
    try:
        agents = AgentStore(engine=store.engine)
        await agents.add("hanako", password_hash=password_hash(), display_name="花子", admin=True)
        await agents.add_token("hanako", token_hash=_HASH)
    finally:
        await store.close()


asyncio.run(_agent())
app = create_app(
    Settings(
        database_url=_DATABASE,
        flows_dir=FLOWS,
        default_flow="mini",
        # Generated requests come fast: limits high enough not to answer everything with 429.
        rate_chat_sessions="100000/minute",
        rate_agent_api="100000/minute",
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,  # seeded: the same cases every run
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
