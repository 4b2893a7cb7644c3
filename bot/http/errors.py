"""The one mapping from our errors to HTTP answers: status, a stable code and a message,
used by the agent API, the console, the web chat and the webhooks."""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import (
    AlreadyClaimed,
    BotError,
    DeliveryFailed,
    HandoffClosed,
    NotHolder,
    StoreError,
    UnknownHandoff,
)
from bot.store import UnknownConversation


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    code: str  # stable, for programs
    message: str  # English, for developers (the console says it in Japanese)


def http_error(error: BotError) -> HttpError:
    """How `error` is answered over HTTP."""
    if isinstance(error, UnknownHandoff):
        return HttpError(404, "not_found", "no such handoff")
    if isinstance(error, UnknownConversation):
        return HttpError(404, "not_found", "no such conversation")
    if isinstance(error, AlreadyClaimed):
        return HttpError(409, "already_claimed", f"{error.agent_name or error.agent} holds it")
    if isinstance(error, NotHolder):
        return HttpError(403, "not_holder", "claim the handoff first")
    if isinstance(error, HandoffClosed):
        return HttpError(409, "closed", f"the handoff is {error.status}")
    if isinstance(error, DeliveryFailed):
        return HttpError(502, "delivery_failed", "kept in the transcript; the send failed")
    if isinstance(error, StoreError):
        return HttpError(503, "unavailable", "the database does not answer; try again")
    return HttpError(500, type(error).__name__, "internal error")
