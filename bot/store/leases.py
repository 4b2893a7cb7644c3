"""Leases: a named claim by one process, for a while (a conversation's events, a background
job). The database decides who holds what; a holder that stops renewing loses it when it
expires, so a dead process's work passes to the others."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from bot.store.db import Database
from bot.store.schema import leases
from bot.store.tx import IN_LIST, insert, now_or


class Leases(Database):
    async def take(
        self,
        names: Sequence[str],
        *,
        holder: str,
        ttl: float,
        now: datetime | None = None,
    ) -> set[str]:
        """Take (or keep) these leases where they are free, expired or already `holder`'s;
        returns the names held now. One statement: two takers never both get one."""
        moment = now_or(now)
        until = moment + timedelta(seconds=ttl)
        taken: set[str] = set()
        unique = sorted(set(names))  # in one order: two takers lock rows alike
        async with self._begin() as connection:
            for start in range(0, len(unique), IN_LIST):
                upsert = insert(connection, leases)
                taking = upsert.on_conflict_do_update(
                    index_elements=[leases.c.name],
                    set_={"holder": upsert.excluded.holder, "expires_at": until},
                    where=sa.or_(leases.c.expires_at < moment, leases.c.holder == holder),
                ).returning(leases.c.name)
                rows = await connection.execute(
                    taking,
                    [
                        {"name": name, "holder": holder, "expires_at": until}
                        for name in unique[start : start + IN_LIST]
                    ],
                )
                taken.update(rows.scalars())
        return taken

    async def release(self, names: Sequence[str], *, holder: str) -> None:
        """Give these leases up (only where `holder` still holds them)."""
        unique = sorted(set(names))
        async with self._begin() as connection:
            for start in range(0, len(unique), IN_LIST):
                await connection.execute(
                    sa.delete(leases).where(
                        leases.c.name.in_(unique[start : start + IN_LIST]),
                        leases.c.holder == holder,
                    )
                )

    async def holders(self, names: Sequence[str], *, now: datetime | None = None) -> dict[str, str]:
        """Who holds these leases now (names free or expired are left out)."""
        moment = now_or(now)
        found: dict[str, str] = {}
        unique = sorted(set(names))
        async with self._begin() as connection:
            for start in range(0, len(unique), IN_LIST):
                rows = await connection.execute(
                    sa.select(leases.c.name, leases.c.holder).where(
                        leases.c.name.in_(unique[start : start + IN_LIST]),
                        leases.c.expires_at >= moment,
                    )
                )
                found.update({row.name: row.holder for row in rows})
        return found
