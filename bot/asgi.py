"""The application class: FastAPI, plus raw ASGI handlers for the hottest webhook paths.

A webhook that LINE may send hundreds of times a second has one job: check, record, answer 200.
FastAPI's middleware and router cost more than that job itself, so such a path can be served
as plain ASGI before them (`fast_paths`), with its own body limit and error answers. Every other
request, and other methods on those paths, go through FastAPI as usual.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

RawHandler = Callable[[Any, Scope, Receive, Send], Awaitable[None]]
"""(app, scope, receive, send): answers one request on its own."""


class App(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_paths: dict[str, RawHandler] = {}  # POST path -> handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast_paths:
            handler = self.fast_paths.get(_route_path(scope))
            if handler is not None:
                await handler(self, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes | None:
    """The request body, or None once it is longer than `limit` (read no further)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)  # the answer will go nowhere; nothing was recorded yet
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def header(scope: Scope, name: bytes) -> str | None:
    """A request header (`name` in lower case), decoded as Latin-1 like Starlette does."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


async def answer(send: Send, status: int, payload: dict[str, str] | None = None) -> None:
    """A response with a JSON body, or an empty one."""
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = [(b"content-length", str(len(body)).encode())]
    if payload is not None:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]  # Starlette's paths include the root path when one is set
    return path
