"""The agent API: the console's actions for scripts and other tools, with bearer tokens.

Every route needs `Authorization: Bearer yg_...` (a token from `yarigai agents token NAME`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field, StringConstraints

from bot.core.ports import AgentRef
from bot.errors import (
    AlreadyClaimed,
    DeliveryFailed,
    HandoffError,
    UnknownHandoff,
)
from bot.http.console.auth import TokenAgent, token_agent
from bot.http.console.views import (
    HandoffDetail,
    HandoffView,
    LineView,
    detail_view,
    handoff_view,
    line_view,
)
from bot.http.errors import Problem, http_error, refuse_unknown_query, responses
from bot.models import Channel, ConversationKey, outbound_text
from bot.store import Agent, Handoff, HandoffOutcome, HandoffStatus

if TYPE_CHECKING:
    from bot.handoff.desk import HandoffDesk
    from bot.wiring import Runtime

MAX_ID = 2**63 - 1  # the database's BIGINT: a larger id names nothing (404 would lie less
# than a 500, the schema's bound says it before asking)
HandoffId = Annotated[int, Path(ge=1, le=MAX_ID, description="The handoff's id.")]


router = APIRouter(
    prefix="/api/v1",
    tags=["agents"],
    dependencies=[Depends(token_agent), Depends(refuse_unknown_query)],
    responses=responses(401, 422, 429, 503),
)

_STATUSES: dict[str, tuple[HandoffStatus, ...]] = {
    "open": (HandoffStatus.WAITING, HandoffStatus.CLAIMED),
    "waiting": (HandoffStatus.WAITING,),
    "claimed": (HandoffStatus.CLAIMED,),
    "closed": (HandoffStatus.RELEASED, HandoffStatus.CANCELLED),
    "all": tuple(HandoffStatus),
}
_ERRORS = responses(403, 404, 409)
_WITH_BODY = responses(400, 413)


class AgentOut(BaseModel):
    name: str
    display_name: str


class TextBody(BaseModel):
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
    ] = Field(description="Sent to the user as is (surrounding whitespace removed).")


class MessageOut(BaseModel):
    message: LineView


class ReleaseIn(BaseModel):
    outcome: HandoffOutcome | None = Field(
        default=None,
        description="How it ended: booked (面談予約済み), info_only (情報提供のみ), declined "
        "(見送り), follow_up (要フォロー).",
    )


class ReleaseOut(BaseModel):
    handoff: HandoffView
    resumed_with: list[str] = Field(description="What the bot said to the user on resuming.")


@router.get("/me", response_model=AgentOut)
async def me(agent: TokenAgent) -> AgentOut:
    """The agent this token belongs to."""
    return AgentOut(name=agent.name, display_name=agent.display_name)


@router.get("/handoffs", response_model=list[HandoffView])
async def list_handoffs(
    request: Request,
    agent: TokenAgent,
    status: Annotated[Literal["open", "waiting", "claimed", "closed", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[HandoffView]:
    """Handoffs, longest waiting first (default: waiting and claimed), each with the user's
    last message and whether this token's agent has read it in the console."""
    handoffs = _desk(request).handoffs
    found = await handoffs.queue(statuses=_STATUSES[status], limit=limit)
    previews = await handoffs.previews([h.id for h in found], agent=agent.name)
    return [handoff_view(h, previews.get(h.id)) for h in found]


@router.get("/handoffs/{handoff_id}", response_model=HandoffDetail, responses=_ERRORS)
async def get_handoff(request: Request, handoff_id: HandoffId) -> HandoffDetail:
    """One handoff with the bot's summary, the transcript (notes included) and mode changes."""
    runtime = _runtime(request)
    handoff = await _get(runtime.desk, handoff_id)
    transcript = await runtime.store.transcript(handoff.conversation_id, limit=500)
    changes = await runtime.desk.handoffs.mode_changes(handoff.conversation_id)
    return detail_view(handoff, transcript, changes)


@router.post("/handoffs/{handoff_id}/claim", response_model=HandoffView, responses=_ERRORS)
async def claim(request: Request, handoff_id: HandoffId, agent: TokenAgent) -> HandoffView:
    """Take over the conversation. 409 with who holds it if another agent was first."""
    try:
        return handoff_view(await _desk(request).claim(handoff_id, _ref(agent)))
    except HandoffError as error:
        raise _http(error) from error


@router.post(
    "/handoffs/{handoff_id}/messages",
    response_model=MessageOut,
    status_code=201,
    responses={**_ERRORS, **_WITH_BODY, **responses(502)},
)
async def send_message(
    request: Request, handoff_id: HandoffId, body: TextBody, agent: TokenAgent
) -> MessageOut:
    """Say something to the user (only while you hold the handoff)."""
    try:
        stored = await _desk(request).reply(handoff_id, _ref(agent), body.text.strip())
    except (HandoffError, DeliveryFailed) as error:
        raise _http(error) from error
    return MessageOut(message=line_view(stored))


@router.post(
    "/handoffs/{handoff_id}/notes",
    response_model=MessageOut,
    status_code=201,
    responses={**_ERRORS, **_WITH_BODY},
)
async def add_note(
    request: Request, handoff_id: HandoffId, body: TextBody, agent: TokenAgent
) -> MessageOut:
    """Leave an internal note: agents see it, the user never does."""
    try:
        stored = await _desk(request).note(handoff_id, _ref(agent), body.text.strip())
    except HandoffError as error:
        raise _http(error) from error
    return MessageOut(message=line_view(stored))


@router.post(
    "/handoffs/{handoff_id}/release",
    response_model=ReleaseOut,
    responses={**_ERRORS, **_WITH_BODY},
)
async def release(
    request: Request, handoff_id: HandoffId, agent: TokenAgent, body: ReleaseIn | None = None
) -> ReleaseOut:
    """Hand the conversation back to the bot, which resumes with a message to the user; the
    body may say how it ended (`outcome`)."""
    outcome = body.outcome if body is not None else None
    try:
        handoff, reply = await _desk(request).release(handoff_id, _ref(agent), outcome=outcome)
    except HandoffError as error:
        raise _http(error) from error
    return ReleaseOut(
        handoff=handoff_view(handoff), resumed_with=[outbound_text(m) for m in reply.messages]
    )


# ---------------------------------------------------------------- users' data (admins)

UserChannel = Annotated[Literal["web", "line", "slack", "cli"], Path(description="The channel.")]
UserAddress = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9:._-]{1,255}$",
        description="The user's address on the channel (LINE user id, Slack DM channel, web chat session).",
    ),
]
_ADMIN_ONLY = responses(403)


class ForgetOut(BaseModel):
    conversations: int = Field(description="Conversations deleted (0 or 1).")
    transcript: int = Field(description="Transcript lines deleted with it.")
    inbox: int = Field(description="Inbound events blanked (kept as seen, without content).")


@router.get("/users/{channel}/{address}", response_model=dict[str, Any], responses=_ADMIN_ONLY)
async def export_user(
    request: Request, channel: UserChannel, address: UserAddress, agent: TokenAgent
) -> dict[str, Any]:
    """Everything stored about one user (APPI disclosure); recorded in the audit log."""
    _admin(agent)
    key = ConversationKey(channel=Channel(channel), address=address)
    return await _runtime(request).store.export_user(key, who=f"agent:{agent.name}")


@router.delete("/users/{channel}/{address}", response_model=ForgetOut, responses=_ADMIN_ONLY)
async def forget_user(
    request: Request, channel: UserChannel, address: UserAddress, agent: TokenAgent
) -> ForgetOut:
    """Delete everything stored about one user (APPI deletion); only the audit entry stays."""
    _admin(agent)
    key = ConversationKey(channel=Channel(channel), address=address)
    counts = await _runtime(request).store.forget_user(key, who=f"agent:{agent.name}")
    return ForgetOut(**counts)


def _admin(agent: Agent) -> None:
    if not agent.admin:
        problem = Problem(error="forbidden", message="only admin agents may")
        raise HTTPException(status_code=403, detail=problem.model_dump(exclude_none=True))


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _desk(request: Request) -> HandoffDesk:
    return _runtime(request).desk


def _ref(agent: Agent) -> AgentRef:
    return AgentRef(id=agent.name, name=agent.display_name, via="api")


async def _get(desk: HandoffDesk, handoff_id: int) -> Handoff:
    try:
        return await desk.handoffs.get(handoff_id)
    except UnknownHandoff as error:
        raise _http(error) from error


def _http(error: HandoffError | DeliveryFailed) -> HTTPException:
    answer = http_error(error)
    problem = Problem(error=answer.code, message=answer.message)
    if isinstance(error, AlreadyClaimed):
        problem = Problem(
            error=answer.code,
            message=answer.message,
            agent=error.agent,
            agent_name=error.agent_name,
        )
    return HTTPException(status_code=answer.status, detail=problem.model_dump(exclude_none=True))
