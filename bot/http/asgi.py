"""The application class: FastAPI, plus raw ASGI handlers for the hottest webhook paths.

A webhook that LINE may send hundreds of times a second has one job: check, record, answer 200.
FastAPI's middleware and router cost more than that job itself, so such a path is a plain ASGI
handler with its own body limit and error answers (`add_post`): a route like any other, and in
`App` also answered before FastAPI's stack. Other methods on the path get FastAPI's 405.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

RawHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
"""Answers one request on its own; finds the application in `scope["app"]`."""


class App(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_paths: dict[str, RawHandler] = {}  # POST path -> handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast_paths:
            handler = self.fast_paths.get(_route_path(scope))
            if handler is not None:
                scope["app"] = self  # as Starlette sets it
                await handler(scope, receive, send)
                return
        if scope["type"] == "http":
            send = _json_413(send)
        await super().__call__(scope, receive, send)


def add_post(app: FastAPI, path: str, handler: RawHandler) -> None:
    """Serve POST `path` with `handler`: as a route of any app, and before FastAPI's stack in
    an `App`."""
    app.router.routes.append(Route(path, _Raw(handler), methods=["POST"], include_in_schema=False))
    if isinstance(app, App):
        app.fast_paths[path] = handler


class _Raw:
    """`handler` as an ASGI app (Starlette calls a plain function endpoint with a Request)."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


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


_TOO_LARGE: Final = json.dumps({"error": "too_large", "message": "Content Too Large"}).encode()


def _json_413(send: Send) -> Send:
    """Starlette's body limit answers some 413s (a declared Content-Length over the limit on a
    route that never reads the body) in plain text: those get the API's one error shape."""
    replacing = False

    async def sending(message: Message) -> None:
        nonlocal replacing
        if message["type"] == "http.response.start" and message["status"] == 413:
            headers = dict(message.get("headers", []))
            if headers.get(b"content-type", b"").startswith(b"text/plain"):
                replacing = True
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k not in (b"content-type", b"content-length")
                ]
                kept += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_TOO_LARGE)).encode()),
                ]
                await send({**message, "headers": kept})
                await send({"type": "http.response.body", "body": _TOO_LARGE})
                return
        if replacing and message["type"] == "http.response.body":
            return  # the plain-text body, already replaced
        await send(message)

    return sending
