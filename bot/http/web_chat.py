"""The web chat: a JSON API over the same service, and the page that uses it."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from bot.core.ports import Reply
from bot.handoff.desk import status_text
from bot.http.errors import refuse_unknown_query, responses
from bot.http.rates import client_ip, rates, too_many
from bot.models import Channel, ChoiceIn, ConversationKey, Mode, StartIn, StoredMessage, TextIn
from bot.storable_text import require_storable
from bot.store import UnknownConversation
from bot.wiring import Runtime

router = APIRouter(responses=responses(422, 503), dependencies=[Depends(refuse_unknown_query)])

# Session ids are unguessable: knowing one is what lets a browser read that conversation.
SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")]


# Refused, not scrubbed: the sender is our own page or a developer, and can send it again.
Said = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000, pattern=r"\S"),
    AfterValidator(require_storable),
]
Short = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(require_storable)
]
Part = Annotated[str, StringConstraints(max_length=100), AfterValidator(require_storable)]


class SayRequest(BaseModel):
    """What the user wrote (`text`) or tapped (`choice`, with the question's `state` and the
    button's `label`); one of `text` and `choice` is needed."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["text"]}, {"required": ["choice"]}]}
    )

    text: Said | SkipJsonSchema[None] = None
    choice: Short | SkipJsonSchema[None] = None
    state: Part | SkipJsonSchema[None] = None
    label: Part | SkipJsonSchema[None] = None


class ChatReply(BaseModel):
    session: str
    mode: Literal["bot", "waiting", "agent"]
    status: str = Field(
        default="", description="Who the user waits for and until when (shown under the chat)."
    )
    messages: list[dict[str, Any]]
    last_id: int = 0


class HistoryReply(BaseModel):
    mode: Literal["bot", "waiting", "agent"]
    status: str = Field(default="", description="As in ChatReply.")
    messages: list[dict[str, Any]]
    last_id: int


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    html, headers = _page()
    return HTMLResponse(html, headers=headers)


@functools.cache
def _page() -> tuple[str, dict[str, str]]:
    """The page and its security headers: its one inline script and style are allowed by
    their hashes, nothing else runs, and no other site may frame it."""
    html = resources.files("bot.http").joinpath("web_chat.html").read_text(encoding="utf-8")
    scripts = " ".join(_hashes(html, "script"))
    styles = " ".join(_hashes(html, "style"))
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    return html, {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _hashes(html: str, tag: str) -> list[str]:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in found
    ]


@router.post("/api/chat/sessions", response_model=ChatReply, responses=responses(429))
async def start(request: Request) -> ChatReply:
    """A new chat and the bot's greeting. Nothing is stored yet: the conversation is created by
    its first message (a page load, or a script calling this in a loop, leaves no row)."""
    refused = await rates(request).hit("chat_sessions", client_ip(request))
    if refused is not None:
        raise too_many(refused)
    runtime: Runtime = request.app.state.runtime
    nonce = secrets.token_urlsafe(16)
    session = nonce + _mac(request, nonce)
    greeting = runtime.service.engine_for(None).advance(None, StartIn())
    return ChatReply(
        session=session,
        mode="bot",
        messages=[m.model_dump(mode="json") for m in greeting.messages],
        last_id=0,
    )


@router.post(
    "/api/chat/sessions/{session}/messages",
    response_model=ChatReply,
    responses=responses(400, 404, 413),
)
async def say(session: SessionId, body: SayRequest, request: Request) -> ChatReply:
    runtime: Runtime = request.app.state.runtime
    key = _key(session)
    if body.choice:
        event: ChoiceIn | TextIn = ChoiceIn(choice=body.choice, state=body.state, label=body.label)
    elif body.text and body.text.strip():
        event = TextIn(text=body.text.strip())
    else:
        raise HTTPException(status_code=422, detail="send 'text' or 'choice'")
    # Requests for an agent are limited per address and per chat: scripts must not fill the
    # agents' queue. Asked before the turn, counted only when the turn queued one.
    limits, ip = rates(request), client_ip(request)
    allowed = await limits.test("handoffs", ip, session) is None
    try:
        # One load and one save: the turn itself finds out whether the session exists.
        reply = await runtime.service.handle(
            key, event, existing_only=True, handoffs_allowed=allowed
        )
    except UnknownConversation:
        if not _issued(request, session):
            raise HTTPException(status_code=404, detail="unknown chat session") from None
        # The chat's first message: the greeting it saw is stored now, then the message.
        await runtime.service.handle(key, StartIn())
        reply = await runtime.service.handle(
            key, event, existing_only=True, handoffs_allowed=allowed
        )
    if reply.handoff is not None:
        await limits.hit("handoffs", ip, session)
    return _chat_reply(session, reply, _status(runtime, reply.mode))


@router.get(
    "/api/chat/sessions/{session}/messages",
    response_model=HistoryReply,
    responses=responses(404),
)
async def history(
    session: SessionId,
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> HistoryReply:
    """Messages after `after` (transcript id): how the page sees what an agent writes."""
    runtime: Runtime = request.app.state.runtime
    stored = await runtime.store.load(_key(session))
    if stored is None:
        raise HTTPException(status_code=404, detail="unknown chat session")
    lines = await runtime.store.transcript(stored.id, limit=500)
    shown = [_shown(line) for line in lines if line.id > after and line.sender != "note"]
    last = max((line.id for line in lines), default=after)
    return HistoryReply(
        mode=stored.mode.value,
        status=_status(runtime, stored.mode),
        messages=shown,
        last_id=last,
    )


def _shown(line: StoredMessage) -> dict[str, Any]:
    if line.direction == "in":
        return {"type": "text", "text": line.text, "id": line.id, "sender": line.sender}
    return {**line.body, "id": line.id, "sender": line.sender}


def _mac(request: Request, nonce: str) -> str:
    """22 characters of HMAC-SHA256 over the nonce: the session id is ours, not made up."""
    key: bytes = request.app.state.chat_key
    digest = hmac.new(key, nonce.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _issued(request: Request, session: str) -> bool:
    nonce, mac = session[:-22], session[-22:]
    return len(session) == 44 and hmac.compare_digest(_mac(request, nonce), mac)


def _key(session: str) -> ConversationKey:
    return ConversationKey(channel=Channel.WEB, address=session)


def _status(runtime: Runtime, mode: Mode) -> str:
    return status_text(mode, runtime.desk.hours, runtime.desk.clock())


def _chat_reply(session: str, reply: Reply, status: str = "") -> ChatReply:
    # `last_id` comes from the saved turn: an agent's message written just after it is then
    # still newer than it, and the page's next poll shows it.
    return ChatReply(
        session=session,
        mode=reply.mode.value,
        status=status,
        messages=[m.model_dump(mode="json") for m in reply.messages],
        last_id=reply.last_id,
    )
