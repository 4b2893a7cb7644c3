"""PostgreSQL's LISTEN/NOTIFY for the inbox: recording events rings a bell that idle workers
wait on, so they neither poll nor wait a polling interval for the first event after a quiet
spell. SQLite has no such thing (nor the need: it is one host's database)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

INBOX_CHANNEL: Final = "yarigai_inbox"
_NOTIFY: Final = sa.select(sa.func.pg_notify(INBOX_CHANNEL, ""))


def ring(connection: sa.Connection) -> None:
    """In the transaction that records events (run in one go: `tx.in_one_go`): PostgreSQL
    delivers it at commit."""
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY)


class InboxBell:
    """Listens on its own connection; `rung` is set at each notification (and when the
    connection is lost, so the waiter looks at once and the bell reconnects)."""

    def __init__(self, engine: AsyncEngine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self.rung = asyncio.Event()
        self._connection: Any = None

    @staticmethod
    def available(engine: AsyncEngine) -> bool:
        return engine.dialect.name == "postgresql"

    async def open(self) -> bool:
        """Listen; False when the database cannot be reached now (try again later)."""
        try:
            self._connection = await asyncpg.connect(self._dsn, timeout=5)
            await self._connection.add_listener(INBOX_CHANNEL, self._heard)
            self._connection.add_termination_listener(self._lost)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.info("inbox notifications unavailable for now (%s)", type(exc).__name__)
            self._connection = None
            return False
        return True

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close(timeout=2)
        self._connection = None

    def _heard(self, *_: object) -> None:
        self.rung.set()

    def _lost(self, *_: object) -> None:
        self.rung.set()
