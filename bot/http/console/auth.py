"""Who an agent is: argon2 passwords, sha256-hashed bearer tokens, signed session cookies
and CSRF tokens. Every console and API route depends on one of `session_agent` or `token_agent`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bot.http.rates import rates, token_key, too_many
from bot.store import Agent, AgentStore

TOKEN_PREFIX: Final = "yg_"
"""Marks our tokens, so a leaked one is recognisable by secret scanners and in support."""
FREE_TRIES: Final = 3
"""Wrong passwords in a row before each next try has to wait (see `login_wait`)."""
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"

_hasher: Final = PasswordHasher()  # argon2id with the library's current recommended costs
_bearer: Final = HTTPBearer(
    auto_error=False,
    scheme_name="AgentToken",
    description="A per-agent token from `yarigai agents token NAME`.",
)


class SignInRequired(Exception):
    """No valid console session: pages answer with the sign-in form, other routes with 401."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def new_token() -> tuple[str, str]:
    """A fresh API token and the hash to store; the token itself is shown once, never kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    # sha256 suffices: the token is 256 random bits, not a guessable password.
    return hashlib.sha256(token.encode()).hexdigest()


async def check_password(agents: AgentStore, name: str, password: str) -> Agent | None:
    """The enabled agent if the password is right (rehashing it if argon2's costs grew)."""
    found = await agents.credentials(name)
    stored_hash = found[1] if found else _dummy_hash()
    try:
        # argon2 is slow on purpose (tens of ms): off the event loop, so others are not kept.
        await asyncio.to_thread(_hasher.verify, stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if found is None or found[0].disabled:
        return None
    if _hasher.check_needs_rehash(stored_hash):
        await agents.set_password(
            name, password_hash=await asyncio.to_thread(hash_password, password)
        )
    return found[0]


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use (the sign-in form needs one too)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse (403) a state-changing console request without this session's token, from the
    form field or, for the console's fetch calls, the X-CSRF-Token header."""
    expected = request.session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong")


def login_wait(agent: Agent, *, lockout_after: int, now: datetime) -> float | None:
    """Seconds `agent` must wait before the next try (0: none), or None when locked out.

    The first two wrong passwords cost nothing; from the third on each try waits twice as long
    as the last (1 s, 2 s, 4 s...), and `lockout_after` in a row lock the account until an admin
    runs `yarigai agents unlock NAME` (or the right password was given before that)."""
    failures = agent.failed_logins
    if failures >= lockout_after:
        return None
    if failures < FREE_TRIES or agent.last_failed_at is None:
        return 0.0
    due = agent.last_failed_at + timedelta(seconds=2 ** (failures - FREE_TRIES))
    return max(0.0, (due - now).total_seconds())


async def session_agent(request: Request) -> Agent:
    """The signed-in, enabled agent of this console session (its row live on the server:
    logging out or being disabled ends it, whatever the cookie says)."""
    name, session_id = request.session.get("agent"), request.session.get("sid")
    if not isinstance(name, str) or not isinstance(session_id, str):
        raise SignInRequired
    agent = await _agents(request).session(name, session_id)
    if agent is None:
        request.session.clear()  # logged out, expired or disabled: the session ends now
        raise SignInRequired
    return agent


async def token_agent(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Agent:
    """The enabled agent whose live token came as `Authorization: Bearer ...`."""
    if credentials is None or not credentials.credentials.startswith(TOKEN_PREFIX):
        raise _unauthorized()
    refused = await rates(request).hit("agent_api", token_key(credentials.credentials))
    if refused is not None:
        raise too_many(refused)
    agent = await _agents(request).by_token(token_hash(credentials.credentials))
    if agent is None:
        raise _unauthorized()
    return agent


SessionAgent = Annotated[Agent, Depends(session_agent)]
TokenAgent = Annotated[Agent, Depends(token_agent)]


@cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown: a wrong name costs as long as a wrong
    password, so timing does not tell which names exist."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _agents(request: Request) -> AgentStore:
    agents: AgentStore = request.app.state.console.agents
    return agents


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="a valid agent token is required",
        headers={"WWW-Authenticate": 'Bearer realm="yarigai agents"'},
    )
