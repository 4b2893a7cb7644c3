"""`AgentStore`: agent accounts (console sign-in) and their API tokens.

Only hashes are stored: argon2 for passwords (hashed by the caller, see `bot.http.console.auth`),
sha256 for tokens (random 256-bit values need no slow hash; the digest is indexable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import AgentExists, UnknownAgent
from bot.store.schema import agent_tokens, agents, console_sessions
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
    failed_logins: int = 0  # wrong passwords in a row
    last_failed_at: datetime | None = None
    admin: bool = False  # may export and delete users' data through the agent API


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentToken:
    id: int
    agent: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None


class AgentStore:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        name: str,
        *,
        password_hash: str,
        display_name: str,
        admin: bool = False,
        now: datetime | None = None,
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
                        admin=admin,
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

    async def disable(self, name: str, *, now: datetime | None = None) -> None:
        """Refuse the agent's sessions and tokens from now on; the account stays for the record."""
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(agents).where(agents.c.name == name).values(disabled=True)
            )
            await connection.execute(_end_sessions(name, now_or(now)))
        if result.rowcount == 0:
            raise UnknownAgent(f"no agent {name!r}")

    # ------------------------------------------------------------ sign-in

    async def login_failed(self, name: str, *, now: datetime | None = None) -> None:
        """One more wrong password for `name` (unknown names are not counted)."""
        a = agents.c
        async with begin(self._engine) as connection:
            await connection.execute(
                sa.update(agents)
                .where(a.name == name)
                .values(failed_logins=a.failed_logins + 1, last_failed_at=now_or(now))
            )

    async def unlock(self, name: str) -> None:
        """Forget the wrong passwords (a right one does too): no delay, no lockout."""
        async with begin(self._engine) as connection:
            result = await connection.execute(
                sa.update(agents)
                .where(agents.c.name == name)
                .values(failed_logins=0, last_failed_at=None)
            )
        if result.rowcount == 0:
            raise UnknownAgent(f"no agent {name!r}")

    async def start_session(
        self, name: str, session_id: str, *, hours: float, now: datetime | None = None
    ) -> None:
        """A console sign-in: the wrong passwords are forgotten and `session_id` lives."""
        now = now_or(now)
        async with begin(self._engine) as connection:
            agent_id = (
                await connection.execute(
                    sa.update(agents)
                    .where(agents.c.name == name)
                    .values(failed_logins=0, last_failed_at=None)
                    .returning(agents.c.id)
                )
            ).scalar_one_or_none()
            if agent_id is None:
                raise UnknownAgent(f"no agent {name!r}")
            await connection.execute(
                sa.insert(console_sessions).values(
                    id=session_id,
                    agent_id=agent_id,
                    created_at=now,
                    expires_at=now + timedelta(hours=hours),
                )
            )

    async def session(
        self, name: str, session_id: str, *, now: datetime | None = None
    ) -> Agent | None:
        """The enabled agent whose live console session this is."""
        s, a = console_sessions.c, agents.c
        async with begin(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(agents)
                    .join(console_sessions, s.agent_id == a.id)
                    .where(
                        s.id == session_id,
                        a.name == name,
                        a.disabled.is_(False),
                        s.revoked_at.is_(None),
                        s.expires_at > now_or(now),
                    )
                )
            ).one_or_none()
        return None if row is None else _agent(row._mapping)

    async def end_session(self, session_id: str, *, now: datetime | None = None) -> None:
        """Logging out: the session's cookie is worth nothing from now on, wherever it is."""
        s = console_sessions.c
        async with begin(self._engine) as connection:
            await connection.execute(
                sa.update(console_sessions)
                .where(s.id == session_id, s.revoked_at.is_(None))
                .values(revoked_at=now_or(now))
            )

    # ------------------------------------------------------------ tokens

    async def add_token(
        self,
        name: str,
        *,
        token_hash: str,
        label: str = "",
        expires_at: datetime | None = None,
        now: datetime | None = None,
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
                            expires_at=expires_at,
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
        now = now_or(now)
        async with begin(self._engine) as connection:
            token_id = (
                await connection.execute(
                    sa.update(agent_tokens)
                    .where(
                        t.token_hash == token_hash,
                        t.revoked_at.is_(None),
                        sa.or_(t.expires_at.is_(None), t.expires_at > now),
                        t.agent_id.in_(sa.select(a.id).where(a.disabled.is_(False))),
                    )
                    .values(last_used_at=now)
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


def _end_sessions(name: str, now: datetime) -> sa.Update:
    s, a = console_sessions.c, agents.c
    return (
        sa.update(console_sessions)
        .where(s.agent_id.in_(sa.select(a.id).where(a.name == name)), s.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _agent(row: sa.RowMapping) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        disabled=bool(row["disabled"]),
        failed_logins=row["failed_logins"],
        last_failed_at=row["last_failed_at"],
        admin=bool(row["admin"]),
    )


def _token(row: sa.RowMapping, name: str) -> AgentToken:
    return AgentToken(
        id=row["id"],
        agent=name,
        label=row["label"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
    )
