"""`AgentStore`: agent accounts (console sign-in) and their API tokens.

Only hashes are stored: argon2 for passwords (hashed by the caller, see `bot.http.console.auth`),
sha256 for tokens (random 256-bit values need no slow hash; the digest is indexable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import AgentExists, UnknownAgent
from bot.store.schema import agent_tokens, agents
from bot.store.tx import begin, insert, now_or


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent account (console and API); never carries the password hash out of the store
    except through `AgentStore.credentials`."""

    id: int
    name: str
    display_name: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentToken:
    id: int
    agent: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AgentStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self, name: str, *, password_hash: str, display_name: str, now: datetime | None = None
    ) -> Agent:
        a = agents.c
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(
                    insert(connection, agents)
                    .values(
                        name=name,
                        password_hash=password_hash,
                        display_name=display_name,
                        created_at=now_or(now),
                        disabled=False,
                    )
                    .on_conflict_do_nothing(index_elements=[a.name])
                    .returning(*agents.c)
                )
            ).one_or_none()
        if row is None:
            raise AgentExists(f"agent {name!r} exists already")
        return _agent(row._mapping)

    async def get(self, name: str) -> Agent | None:
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(sa.select(agents).where(agents.c.name == name))
            ).one_or_none()
        return None if row is None else _agent(row._mapping)

    async def credentials(self, name: str) -> tuple[Agent, str] | None:
        """The account and its password hash, for signing in."""
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(sa.select(agents).where(agents.c.name == name))
            ).one_or_none()
        return None if row is None else (_agent(row._mapping), row.password_hash)

    async def set_password(self, name: str, *, password_hash: str) -> None:
        """Replace the hash (e.g. rehashed with newer argon2 parameters)."""
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(agents).where(agents.c.name == name).values(password_hash=password_hash)
            )
        if result.rowcount == 0:
            raise UnknownAgent(f"no agent {name!r}")

    async def all(self) -> list[Agent]:
        async with begin(self._engine) as connection:
            rows = (await connection.execute(sa.select(agents).order_by(agents.c.name))).all()
        return [_agent(row._mapping) for row in rows]

    async def disable(self, name: str) -> None:
        """Refuse the agent's sessions and tokens from now on; the account stays for the record."""
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(agents).where(agents.c.name == name).values(disabled=True)
            )
        if result.rowcount == 0:
            raise UnknownAgent(f"no agent {name!r}")

    # ------------------------------------------------------------ tokens

    async def add_token(
        self, name: str, *, token_hash: str, label: str = "", now: datetime | None = None
    ) -> AgentToken:
        async with begin(self._engine) as connection:
            agent_id = (
                await connection.execute(sa.select(agents.c.id).where(agents.c.name == name))
            ).scalar_one_or_none()
            if agent_id is None:
                raise UnknownAgent(f"no agent {name!r}")
            try:
                row = (
                    await connection.execute(
                        sa.insert(agent_tokens)
                        .values(
                            agent_id=agent_id,
                            token_hash=token_hash,
                            label=label,
                            created_at=now_or(now),
                        )
                        .returning(*agent_tokens.c)
                    )
                ).one()
            except IntegrityError as error:  # a sha256 collision of random tokens: never
                raise AgentExists("token exists already") from error
        return _token(row._mapping, name)

    async def by_token(self, token_hash: str, *, now: datetime | None = None) -> Agent | None:
        """The enabled agent a live token belongs to (and note when it was used)."""
        t, a = agent_tokens.c, agents.c
        async with begin(self._engine) as connection:
            token_id = (
                await connection.execute(
                    sa.update(agent_tokens)
                    .where(
                        t.token_hash == token_hash,
                        t.revoked_at.is_(None),
                        t.agent_id.in_(sa.select(a.id).where(a.disabled.is_(False))),
                    )
                    .values(last_used_at=now_or(now))
                    .returning(t.agent_id)
                )
            ).scalar_one_or_none()
            if token_id is None:
                return None
            row = (await connection.execute(sa.select(agents).where(a.id == token_id))).one()
        return _agent(row._mapping)

    async def tokens(self, name: str) -> list[AgentToken]:
        t, a = agent_tokens.c, agents.c
        async with begin(self._engine) as connection:
            rows = (
                await connection.execute(
                    sa.select(agent_tokens)
                    .join(agents, a.id == t.agent_id)
                    .where(a.name == name)
                    .order_by(t.id)
                )
            ).all()
        return [_token(row._mapping, name) for row in rows]

    async def revoke_tokens(self, name: str, *, now: datetime | None = None) -> int:
        t, a = agent_tokens.c, agents.c
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(agent_tokens)
                .where(
                    t.agent_id.in_(sa.select(a.id).where(a.name == name)), t.revoked_at.is_(None)
                )
                .values(revoked_at=now_or(now))
            )
        return result.rowcount


def _agent(row: sa.RowMapping) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        disabled=bool(row["disabled"]),
    )


def _token(row: sa.RowMapping, name: str) -> AgentToken:
    return AgentToken(
        id=row["id"],
        agent=name,
        label=row["label"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
