"""The one mapping from our errors to HTTP answers: status, a stable code and a message,
used by the agent API, the console, the web chat and the webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from bot.errors import (
    AlreadyClaimed,
    BadInput,
    BotError,
    DeliveryFailed,
    HandoffClosed,
    NotHolder,
    SlotTaken,
    StoreError,
    UnknownBooking,
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
    if isinstance(error, BadInput):
        return HttpError(400, "bad_request", str(error))
    if isinstance(error, UnknownBooking):
        return HttpError(404, "not_found", "no such booking")
    if isinstance(error, SlotTaken):
        return HttpError(409, "slot_taken", "someone booked this slot first")
    if isinstance(error, DeliveryFailed):
        return HttpError(502, "delivery_failed", "kept in the transcript; the send failed")
    if isinstance(error, StoreError):
        return HttpError(503, "unavailable", "the database does not answer; try again")
    return HttpError(500, type(error).__name__, "internal error")


class Problem(BaseModel):
    """Every error answer of the JSON APIs has this shape (the console's pages aside)."""

    error: str = Field(description="A stable code, for programs: `not_found`, `rate_limited`...")
    message: str = Field(description="What went wrong, in English, for developers.")
    agent: str | None = Field(default=None, description="409 `already_claimed`: who holds it.")
    agent_name: str | None = Field(default=None, description="409 `already_claimed`: their name.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="422: what in the request was invalid, field by field."
    )


_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    502: "delivery_failed",
    503: "unavailable",
}


def problem(status: int, detail: Any) -> dict[str, Any]:
    """The body of an error answer: `detail` as our routes and FastAPI raise it."""
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        body = Problem.model_validate(detail)
    else:
        code = _CODES.get(status, "error")
        body = Problem(error=code, message=str(detail) if detail else code.replace("_", " "))
    return body.model_dump(exclude_none=True)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the one error schema."""
    return {
        status: {"model": Problem, "description": _DESCRIPTIONS.get(status, "")}
        for status in statuses
    }


_DESCRIPTIONS: Final = {
    400: "The body is not JSON, or is nested too deeply.",
    401: "No valid agent token.",
    403: "Not allowed (`not_holder`: claim the handoff first; `forbidden`: admins only).",
    404: "No such resource.",
    409: "Someone else holds it (`agent`, `agent_name`), or it is closed.",
    413: "The body is larger than MAX_BODY_BYTES.",
    422: "The request does not match the schema (`details`).",
    429: "Too many requests: wait for `Retry-After` seconds.",
    502: "Kept, but the user's channel refused it.",
    503: "The database does not answer; try again.",
}


def refuse_unknown_query(request: Request) -> None:
    """Query parameters an operation does not document are refused (422), as its OpenAPI
    document says (no additional properties): `?stauts=all` must not quietly list the default."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = {field.alias for field in get_flat_params(dependant)}
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown parameter"}
                for name in unknown
            ]
        )
