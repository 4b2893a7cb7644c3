"""The console's live updates as Server-Sent Events: the queue, and, for an open conversation,
its status and new transcript lines. Each stream reads the store whenever the feed says
something changed, and every few seconds regardless (moves made by other processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from bot.errors import UnknownHandoff
from bot.http.console.auth import SessionAgent, session_agent
from bot.http.console.pages import queue_views
from bot.http.console.views import handoff_view, line_view

if TYPE_CHECKING:
    from bot.http.console import Console

POLL_SECONDS: Final = 3.0  # the longest a move made by another server process takes to show
STREAM_SECONDS: Final = 60.0
"""A stream ends after this long and the browser reconnects (EventSource does so by itself):
no connection outlives a server shutdown by more than this, and a disabled agent's stream
stops within it."""
RETRY_MS: Final = 1000

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(session_agent)]
)


@router.get("/events", response_class=EventSourceResponse)
async def stream(
    request: Request,
    agent: SessionAgent,
    handoff: Annotated[int | None, Query(ge=1)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """`queue` events always; with `handoff`, also `handoff` (its status) and `lines` (new
    transcript lines after the id `after`)."""
    if last_event_id and last_event_id.isdigit():  # a reconnect: go on from the last line sent
        after = max(after, int(last_event_id))
    console: Console = request.app.state.console
    desk, store, feed = console.runtime.desk, console.runtime.store, console.feed
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS
    sent_queue: list[dict[str, object]] | None = None
    sent_handoff: dict[str, object] | None = None
    yield ServerSentEvent(comment="live", retry=RETRY_MS)
    while not feed.closed and loop.time() < deadline:
        moment = feed.moment()
        queue = [v.model_dump(mode="json") for v in await queue_views(desk.handoffs, agent.name)]
        if queue != sent_queue:
            yield ServerSentEvent(event="queue", data=queue)
            sent_queue = queue
        if handoff is not None:
            try:
                current = await desk.handoffs.get(handoff)
            except UnknownHandoff:
                yield ServerSentEvent(event="gone", data=handoff)  # the page stops listening
                return
            view = handoff_view(current).model_dump(mode="json")
            if view != sent_handoff:
                yield ServerSentEvent(event="handoff", data=view)
                sent_handoff = view
            lines = await store.transcript(current.conversation_id, limit=200)
            new = [line_view(line) for line in lines if line.id > after]
            if new:
                after = new[-1].id
                # Shown on the open page: read (the queue's unread marker clears).
                await desk.handoffs.mark_read(handoff, agent=agent.name, message_id=after)
                data = [line.model_dump(mode="json") for line in new]
                yield ServerSentEvent(event="lines", data=data, id=str(after))
        if await request.is_disconnected():
            return
        await feed.wait(moment, min(POLL_SECONDS, max(0.0, deadline - loop.time())))
