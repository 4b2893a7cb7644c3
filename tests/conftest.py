"""Shared fixtures. `store` is a migrated SqlStore on every backend: a SQLite file, and a
fresh schema on PostgreSQL (TEST_DATABASE_URL). Without a PostgreSQL server those cases skip,
except under CI=true, where they fail."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from uuid import uuid4

import pytest
from sqlalchemy.engine import make_url

from bot.errors import StoreError
from bot.store import SqlStore, create_engine

POSTGRES_URL: Final = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI: Final = os.environ.get("CI", "").lower() == "true"
# Apps built in a test's own process (create_app) run LINE and Slack turns themselves: the
# default, WORKER_MODE=separate, leaves them to `yarigai worker` processes, which the process
# tests (test_worker_process.py, test_faults.py) start and check. Processes a test starts get
# the mode it sets, or this one.
os.environ.setdefault("WORKER_MODE", "inline")
BACKENDS: Final = ("sqlite", "postgresql")

_postgres_problem: dict[str, str | None] = {}  # probed once per run, not once per test


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreTarget:
    """Where a test's store lives: open it with `SqlStore.open(target.url, schema=...)`."""

    backend: str
    url: str
    schema: str | None = None

    async def open(self) -> SqlStore:
        return await SqlStore.open(self.url, schema=self.schema)


@pytest.fixture(params=BACKENDS)
async def store_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreTarget]:
    """An empty database on each backend, not yet migrated."""
    if request.param == "sqlite":
        # A subdirectory that does not exist yet: create_engine must make it.
        yield StoreTarget(backend="sqlite", url=f"sqlite:///{tmp_path / 'data' / 'yarigai.db'}")
        return
    await _require_postgres(POSTGRES_URL)
    # A schema per test rather than dropping tables: tests (and other people's runs against
    # the same server) never see each other's rows, and a crashed test leaves nothing behind
    # that a later run trips over.
    schema = f"test_{uuid4().hex}"
    admin = create_engine(POSTGRES_URL)
    try:
        async with admin.begin() as connection:
            await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield StoreTarget(backend="postgresql", url=POSTGRES_URL, schema=schema)
    finally:
        async with admin.begin() as connection:
            await connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.dispose()


@pytest.fixture
async def postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, for processes the test starts."""
    await _require_postgres(POSTGRES_URL)
    name = f"yarigai_test_{uuid4().hex[:16]}"
    engine = create_engine(POSTGRES_URL)
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await engine.dispose()


@pytest.fixture
async def store(store_target: StoreTarget) -> AsyncIterator[SqlStore]:
    """A migrated, open SqlStore on each backend."""
    opened = await store_target.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _require_postgres(url: str) -> None:
    if url not in _postgres_problem:
        _postgres_problem[url] = await _probe(url)
    problem = _postgres_problem[url]
    if problem is None:
        return
    where = make_url(url).render_as_string(hide_password=True)
    message = f"PostgreSQL at {where} does not answer ({problem}); set TEST_DATABASE_URL"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


async def _probe(url: str) -> str | None:
    store = SqlStore(engine=create_engine(url))
    try:
        await asyncio.wait_for(store.ping(), timeout=5)
    except (StoreError, TimeoutError) as error:
        return str(error).splitlines()[0] or type(error).__name__
    finally:
        await store.close()
    return None
