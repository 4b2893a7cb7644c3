"""Rate limits at the edge (the `limits` library): counted in Redis when REDIS_URL is set, so
every process shares them, else in this process's memory. Over a limit: 429 with Retry-After.

A limiter that cannot reach Redis lets requests through (and logs it): a broken counter must
not take the web chat or the console down with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Final, Literal

from fastapi import HTTPException, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.config import Settings

log = logging.getLogger(__name__)

Kind = Literal["chat_sessions", "handoffs", "login", "agent_api"]
NAMESPACE: Final = "yarigai"


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after: int  # whole seconds, at least 1


class Rates:
    """The app's limits; `hit` counts a request, `test` only asks."""

    def __init__(self, settings: Settings) -> None:
        if settings.redis_url:
            uri = "async+" + settings.redis_url
            self.storage: Storage = RedisStorage(uri, implementation="redispy")
        else:
            self.storage = MemoryStorage()
        self.shared = bool(settings.redis_url)
        self._limiter = MovingWindowRateLimiter(self.storage)
        self.items: dict[Kind, RateLimitItem] = {
            "chat_sessions": parse(settings.rate_chat_sessions),
            "handoffs": parse(settings.rate_handoffs),
            "login": parse(settings.rate_login),
            "agent_api": parse(settings.rate_agent_api),
        }

    async def hit(self, kind: Kind, *keys: str) -> Refusal | None:
        """Count one request for each of `keys`; a Refusal if any was over its limit."""
        item = self.items[kind]
        refused: Refusal | None = None
        for key in keys:
            try:
                if not await self._limiter.hit(item, NAMESPACE, kind, key):
                    refused = _later(refused, await self._retry_after(item, kind, key))
            except Exception as error:  # Redis down or refusing: count nothing, say so
                log.warning("rate limit %s not counted: %s", kind, type(error).__name__)
        return refused

    async def test(self, kind: Kind, *keys: str) -> Refusal | None:
        """Would one more request be refused (counting nothing)?"""
        item = self.items[kind]
        refused: Refusal | None = None
        for key in keys:
            try:
                if not await self._limiter.test(item, NAMESPACE, kind, key):
                    refused = _later(refused, await self._retry_after(item, kind, key))
            except Exception as error:
                log.warning("rate limit %s not checked: %s", kind, type(error).__name__)
        return refused

    async def clear(self, kind: Kind, key: str) -> None:
        try:
            await self._limiter.clear(self.items[kind], NAMESPACE, kind, key)
        except Exception as error:
            log.warning("rate limit %s not cleared: %s", kind, type(error).__name__)

    async def _retry_after(self, item: RateLimitItem, kind: Kind, key: str) -> int:
        stats = await self._limiter.get_window_stats(item, NAMESPACE, kind, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


def too_many(refusal: Refusal) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail="too many requests; try again later",
        headers={"Retry-After": str(refusal.retry_after)},
    )


def client_ip(request: Request) -> str:
    """The client's address (uvicorn takes it from X-Forwarded-For of trusted proxies)."""
    return request.client.host if request.client else "?"


def token_key(token: str) -> str:
    """A bearer token as a rate key: its digest, never the token itself (Redis keeps keys)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def rates(request: Request) -> Rates:
    found: Rates = request.app.state.rates
    return found


def _later(one: Refusal | None, seconds: int) -> Refusal:
    return Refusal(max(seconds, one.retry_after if one else 0))
