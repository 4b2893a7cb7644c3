"""Getting rendered messages to one LINE user: the reply token first, push as the fallback.

Pushes carry an `X-Line-Retry-Key` derived from our own message id, so retrying a push that LINE
may already have accepted never shows the user the same message twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from linebot.v3.messaging import Message

from bot.channels.line.api import (
    LineApi,
    LineApiError,
    LineConflict,
    LineInvalidReplyToken,
    LineRateLimited,
)
from bot.channels.line.render import batches
from bot.errors import DeliveryFailed

log = logging.getLogger(__name__)

RETRY_DELAYS: Final = (0.5, 2.0, 5.0)
"""Seconds to wait before each retry of a 5xx, 429 or timeout; then the attempt fails."""
REPLY_TOKEN_LIFE: Final = 50.0
"""Seconds after the event during which its reply token is worth trying (LINE: about a minute)."""

_RETRY_KEYS: Final = uuid.UUID("5b0e7f43-3c7e-4d55-9a53-8f1f0c1c7a11")  # our uuid5 namespace


class LineDeliveryFailed(DeliveryFailed):
    """LINE did not take the messages; `replied` says whether part went out by reply token
    (so the rest must not be pushed again from the start)."""

    def __init__(self, cause: LineApiError, *, replied: bool, reply_unclear: bool = False) -> None:
        self.cause = cause
        self.replied = replied
        # The reply was tried and its outcome is unknown (LINE failed or timed out, then
        # pushes failed too): a later round may find the token spent, which means delivered.
        self.reply_unclear = reply_unclear
        super().__init__(str(cause))

    @property
    def retryable(self) -> bool:
        """Worth another round later: LINE failed, not our request, and nothing went by reply."""
        return self.cause.retryable and not self.replied

    @property
    def maybe_delivered(self) -> bool:
        return self.reply_unclear

    def __repr__(self) -> str:
        return f"LineDeliveryFailed(cause={self.cause!r}, replied={self.replied})"


def retry_key(message_key: str, batch: int) -> str:
    """The X-Line-Retry-Key for one push request of a logical message (a UUID, as LINE wants)."""
    return str(uuid.uuid5(_RETRY_KEYS, f"{message_key}#{batch}"))


class Delivery:
    def __init__(
        self,
        *,
        api: LineApi,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        reply_token_life: float = REPLY_TOKEN_LIFE,
    ) -> None:
        self.api = api
        self.retry_delays = tuple(retry_delays)
        self.reply_token_life = reply_token_life

    async def deliver(
        self,
        to: str,
        messages: Sequence[Message],
        *,
        message_key: str,
        reply_token: str | None = None,
        occurred_at: datetime | None = None,
        token_maybe_spent: bool = False,
        retry: bool = True,
    ) -> None:
        """Deliver `messages` in order; raises LineDeliveryFailed when LINE will not take them.

        The first five go by reply token while it is fresh; what remains, or everything when
        the token is stale or refused, is pushed under retry keys from `message_key`.
        `token_maybe_spent`: an earlier attempt (before a crash, say) may have used the token,
        so LINE refusing it while fresh means that attempt delivered. `retry` False: one try
        per call, no waiting (a probe of whether LINE is back).
        """
        groups = batches(messages)
        first = 0
        unclear = False
        delays = self.retry_delays if retry else ()
        if reply_token and groups and self._fresh(occurred_at):
            replied, unclear = await self._reply(
                reply_token, groups[0], occurred_at, token_maybe_spent, delays
            )
            first = 1 if replied else 0
        for index in range(first, len(groups)):
            try:
                await self._push(to, groups[index], retry_key(message_key, index), delays)
            except LineApiError as exc:
                raise LineDeliveryFailed(
                    exc, replied=first == 1, reply_unclear=unclear and first == 0
                ) from None

    async def push(self, to: str, messages: Sequence[Message], *, message_key: str) -> None:
        """Deliver by push only (no reply token): agent replies, late and recovered messages."""
        await self.deliver(to, messages, message_key=message_key)

    async def _push(
        self, to: str, messages: list[Message], key: str, delays: Sequence[float]
    ) -> None:
        try:
            await self._retrying(lambda: self.api.push(to, messages, retry_key=key), delays)
        except LineConflict:
            log.info("LINE had accepted push %s before; not sent again", key)

    async def _reply(
        self,
        token: str,
        messages: list[Message],
        occurred_at: datetime | None,
        maybe_spent: bool,
        delays: Sequence[float],
    ) -> tuple[bool, bool]:
        """(delivered by reply, outcome unclear): push is used for what was not delivered;
        unclear means LINE failed or timed out on every try (it may have delivered)."""
        ambiguous = maybe_spent

        def note(exc: LineApiError) -> None:
            nonlocal ambiguous
            # A 5xx or a timeout may come after LINE delivered and spent the token.
            ambiguous = ambiguous or not isinstance(exc, LineRateLimited)

        try:
            await self._retrying(lambda: self.api.reply(token, messages), delays, on_retry=note)
        except LineInvalidReplyToken:
            if ambiguous and self._fresh(occurred_at):
                # A fresh token refused after an unclear attempt was spent by that attempt.
                log.info("reply token spent by an earlier attempt; counted as delivered")
                return True, False
            log.info("reply token expired or used; pushing instead")
            return False, False
        except LineApiError as exc:
            if exc.retryable:
                log.warning("reply failed (%s); pushing instead", exc)
                return False, not isinstance(exc, LineRateLimited) or ambiguous
            raise LineDeliveryFailed(exc, replied=False) from None
        return True, False

    async def _retrying(
        self,
        call: Callable[[], Awaitable[None]],
        delays: Sequence[float],
        *,
        on_retry: Callable[[LineApiError], None] | None = None,
    ) -> None:
        for delay in (*delays, None):
            try:
                await call()
                return
            except LineApiError as exc:
                if not exc.retryable or delay is None:
                    raise
                if on_retry is not None:
                    on_retry(exc)
                log.warning("%s; retrying in %.1fs", exc, delay)
                # Jitter, so many conversations failing together do not retry in lockstep.
                await asyncio.sleep(delay * random.uniform(1.0, 1.25))

    def _fresh(self, occurred_at: datetime | None) -> bool:
        if occurred_at is None:
            return True
        age = (datetime.now(UTC) - occurred_at).total_seconds()
        return age < self.reply_token_life
