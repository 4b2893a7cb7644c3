"""A fake Slack Web API on 127.0.0.1, and Slack's side of the Events API for tests.

`FakeSlackApi` serves `auth.test`, `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
`conversations.open` and `users.info` over real HTTP (aiohttp in its own thread, so it serves
sync and async tests alike) with Slack's response shapes. It checks the bearer token, required
arguments and the Block Kit limits, keeps every channel's messages as its members would see
them (updates applied) and each user's ephemeral messages apart (only they see those), records
every call, and fails on request (429 with Retry-After, 500, `ok: false`).
It is stricter than Slack in one way: a message with blocks but no `text` fallback is refused.

`SlackEvents` builds what Slack sends to the app: signed `event_callback` JSON and
form-encoded `block_actions`, shaped like Slack's real payloads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

BOT_USER_ID = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM_ID = "T0000001"
APP_ID = "A0000001"

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTIONS = 25
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ID = 255


@dataclass
class Call:
    """One request the fake received, after its checks."""

    method: str
    args: dict[str, Any]
    status: int
    response: dict[str, Any]
    at: float  # time.monotonic() when it arrived


@dataclass
class Posted:
    """A message in a channel as its members see it now."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID
    edits: int = 0

    def buttons(self) -> list[dict[str, Any]]:
        return [
            element
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("type") == "button"
        ]

    def button(self, label: str) -> dict[str, Any]:
        """The button whose label is `label` (ignoring a selection mark)."""
        for button in self.buttons():
            if button["text"]["text"].removeprefix("✓ ") == label:
                return button
        shown = [b["text"]["text"] for b in self.buttons()]
        raise AssertionError(f"no button {label!r} on message {self.ts}; buttons: {shown}")

    def shown_text(self) -> str:
        """Every text the blocks show, one per line (what a reader sees, roughly)."""
        return "\n".join(_block_texts(self.blocks)) or self.text


@dataclass
class Ephemeral:
    """A message only `user` sees ("Only visible to you"); Slack keeps no history of it."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None


@dataclass
class _Failure:
    status: int
    error: str | None
    retry_after: int | None


@dataclass
class FakeSlackApi:
    token: str = "xoxb-fake-token-0123456789"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Posted] = []
        self._ephemerals: list[Ephemeral] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._clock = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ life

    def start(self) -> FakeSlackApi:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-slack-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Slack API did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeSlackApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------ control and inspection

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` fail: HTTP `status` (429 with `retry_after`,
        500), or HTTP 200 with `{"ok": false, "error": error}`."""
        with self._lock:
            self._failures.setdefault(method, []).extend(
                _Failure(status=status, error=error, retry_after=retry_after) for _ in range(times)
            )

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def messages(self, channel: str, thread_ts: str | None = None) -> list[Posted]:
        """What a member sees in `channel`: its top level, or the replies in `thread_ts`."""
        with self._lock:
            return [
                m
                for m in self._messages
                if m.channel == channel and m.thread_ts == thread_ts and m.ts != thread_ts
            ]

    def dm(self, user: str) -> list[Posted]:
        return self.messages(dm_channel(user))

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        """Ephemeral messages shown, to `user` or to anyone."""
        with self._lock:
            return [e for e in self._ephemerals if user is None or e.user == user]

    def add_user_message(
        self, channel: str, text: str, *, user: str, thread_ts: str | None = None
    ) -> Posted:
        """A message a person wrote (so the channel's history is whole); returns it with its ts."""
        with self._lock:
            posted = Posted(
                channel=channel,
                ts=self._next_ts(),
                text=text,
                blocks=[],
                thread_ts=thread_ts,
                user=user,
                bot_id=None,
            )
            self._messages.append(posted)
            return posted

    # ------------------------------------------------------------ server

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        with self._lock:
            status, body, headers = self._answer(method, args, request.headers)
            self.calls.append(
                Call(method=method, args=args, status=status, response=body, at=time.monotonic())
            )
        if status != 200 and not body:
            return web.Response(status=status, text="upstream trouble", headers=headers)
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, args: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return 200, _error("not_authed"), {}
        if auth.removeprefix("Bearer ") != self.token:
            return 200, _error("invalid_auth"), {}
        planned = self._failures.get(method)
        if planned:
            failure = planned.pop(0)
            if failure.status == 429:
                after = str(failure.retry_after if failure.retry_after is not None else 1)
                return 429, _error("ratelimited"), {"Retry-After": after}
            if failure.status != 200:
                return failure.status, {}, {}
            return 200, _error(failure.error or "internal_error"), {}
        handler = _METHODS.get(method)
        if handler is None:
            return 200, _error("unknown_method"), {}
        return 200, handler(self, args), {}

    # ------------------------------------------------------------ methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "yarigai",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return _error("channel_not_found")
        if not channel.startswith(("C", "D", "G")):
            return _error("channel_not_found")
        problem = _message_problem(args)
        if problem:
            return problem
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not any(
            m.ts == thread_ts and m.channel == channel for m in self._messages
        ):
            return _error("thread_not_found")
        posted = Posted(
            channel=channel,
            ts=self._next_ts(),
            text=args.get("text", ""),
            blocks=_blocks(args),
            thread_ts=thread_ts,
        )
        self._messages.append(posted)
        return {"ok": True, "channel": channel, "ts": posted.ts, "message": _shape(posted)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not channel:
            return _error("channel_not_found")
        if not ts:
            return _error("invalid_arguments")
        problem = _message_problem(args)
        if problem:
            return problem
        posted = next((m for m in self._messages if m.channel == channel and m.ts == ts), None)
        if posted is None:
            return _error("message_not_found")
        if posted.bot_id != BOT_ID:
            return _error("cant_update_message")
        posted.text = args.get("text", "")
        posted.blocks = _blocks(args)
        posted.edits += 1
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": posted.text,
            "message": _shape(posted),
        }

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, user = args.get("channel"), args.get("user")
        if not channel or not channel.startswith(("C", "D", "G")):
            return _error("channel_not_found")
        if not user:
            return _error("user_not_found")
        problem = _message_problem(args)
        if problem:
            return problem
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not any(
            m.ts == thread_ts and m.channel == channel for m in self._messages
        ):
            return _error("thread_not_found")
        self._ephemerals.append(
            Ephemeral(
                channel=channel,
                user=user,
                text=args.get("text", ""),
                blocks=_blocks(args),
                thread_ts=thread_ts,
            )
        )
        return {"ok": True, "message_ts": self._next_ts()}

    def _open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", "")).split(",")
        if users == [""]:
            return _error("users_list_not_supplied")
        if len(users) != 1:
            return _error("not_implemented_in_fake")
        return {"ok": True, "channel": {"id": dm_channel(users[0])}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user")
        if not user:
            return _error("invalid_arguments")
        known = self.users.get(user)
        if known is None:
            return _error("user_not_found")
        return {"ok": True, "user": {"id": user, "team_id": TEAM_ID, "is_bot": False, **known}}

    def _next_ts(self) -> str:
        n = next(self._clock)
        return f"{1_700_000_000 + n}.{n:06d}"


_METHODS = {
    "auth.test": FakeSlackApi._auth_test,
    "chat.postMessage": FakeSlackApi._post_message,
    "chat.update": FakeSlackApi._update,
    "chat.postEphemeral": FakeSlackApi._post_ephemeral,
    "conversations.open": FakeSlackApi._open,
    "users.info": FakeSlackApi._users_info,
}


def dm_channel(user: str) -> str:
    return "D" + user.removeprefix("U")


# ---------------------------------------------------------------- Block Kit checks


def block_kit_errors(blocks: list[dict[str, Any]]) -> list[str]:
    """Slack's limits that our messages could break, as Slack words them (with a JSON pointer)."""
    errors: list[str] = []

    def err(message: str, pointer: str) -> None:
        errors.append(f"{message} [json-pointer:{pointer}]")

    if len(blocks) > MAX_BLOCKS:
        err(f"must provide no more than {MAX_BLOCKS} items", "/blocks")
    action_ids: set[str] = set()
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        kind = block.get("type")
        block_id = block.get("block_id")
        if block_id is not None:
            if len(block_id) > MAX_ID or block_id in block_ids:
                err("invalid or duplicate block_id", f"{at}/block_id")
            block_ids.add(block_id)
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                err("must provide text or fields", at)
            if text is not None:
                _check_text(
                    text, MAX_SECTION_TEXT, f"{at}/text", err, kinds=("plain_text", "mrkdwn")
                )
            if fields:
                if len(fields) > MAX_SECTION_FIELDS:
                    err(f"must provide no more than {MAX_SECTION_FIELDS} items", f"{at}/fields")
                for j, f in enumerate(fields):
                    _check_text(
                        f, MAX_FIELD_TEXT, f"{at}/fields/{j}", err, kinds=("plain_text", "mrkdwn")
                    )
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= MAX_ACTIONS:
                err(f"must provide 1 to {MAX_ACTIONS} items", f"{at}/elements")
            for j, element in enumerate(elements):
                where = f"{at}/elements/{j}"
                if element.get("type") != "button":
                    err("this fake knows only buttons", where)
                    continue
                _check_text(
                    element.get("text"),
                    MAX_BUTTON_TEXT,
                    f"{where}/text",
                    err,
                    kinds=("plain_text",),
                )
                action_id = element.get("action_id", "")
                if not action_id or len(action_id) > MAX_ID:
                    err("must provide a valid action_id", f"{where}/action_id")
                elif action_id in action_ids:
                    err("action_id must be unique in the message", f"{where}/action_id")
                action_ids.add(action_id)
                if len(element.get("value", "")) > MAX_BUTTON_VALUE:
                    err(f"must be less than {MAX_BUTTON_VALUE + 1} characters", f"{where}/value")
                if element.get("style") not in (None, "primary", "danger"):
                    err("must be primary or danger", f"{where}/style")
        elif kind == "header":
            _check_text(
                block.get("text"), MAX_HEADER_TEXT, f"{at}/text", err, kinds=("plain_text",)
            )
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                err(f"must provide 1 to {MAX_CONTEXT_ELEMENTS} items", f"{at}/elements")
            for j, element in enumerate(elements):
                _check_text(
                    element,
                    MAX_SECTION_TEXT,
                    f"{at}/elements/{j}",
                    err,
                    kinds=("plain_text", "mrkdwn"),
                )
        elif kind != "divider":
            err(f"unsupported block type {kind!r}", f"{at}/type")
    return errors


def _check_text(text: Any, limit: int, pointer: str, err: Any, *, kinds: tuple[str, ...]) -> None:
    if not isinstance(text, dict) or text.get("type") not in kinds:
        err(f"must be a text object of type {' or '.join(kinds)}", pointer)
        return
    value = text.get("text")
    if not isinstance(value, str) or not value.strip():
        err("must be more than 0 characters", f"{pointer}/text")
    elif len(value) > limit:
        err(f"must be less than {limit + 1} characters", f"{pointer}/text")


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def _message_problem(args: dict[str, Any]) -> dict[str, Any] | None:
    blocks = _blocks(args)
    text = args.get("text")
    if not text and not blocks:
        return _error("no_text")
    if not text:
        return _error("invalid_arguments", messages=["[ERROR] a text fallback is required (fake)"])
    errors = block_kit_errors(blocks)
    if errors:
        return _error("invalid_blocks", errors=errors, messages=[f"[ERROR] {e}" for e in errors])
    return None


def _error(
    code: str, *, errors: list[str] | None = None, messages: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error": code}
    if errors:
        body["errors"] = errors
    if messages:
        body["response_metadata"] = {"messages": messages}
    return body


def _shape(posted: Posted) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "type": "message",
        "user": posted.user,
        "text": posted.text,
        "blocks": posted.blocks,
        "ts": posted.ts,
        "team": TEAM_ID,
    }
    if posted.bot_id:
        shaped["bot_id"] = posted.bot_id
        shaped["app_id"] = APP_ID
    if posted.thread_ts:
        shaped["thread_ts"] = posted.thread_ts
    return shaped


def _block_texts(blocks: list[dict[str, Any]]) -> Iterator[str]:
    for block in blocks:
        if isinstance(block.get("text"), dict):
            yield block["text"]["text"]
        for f in block.get("fields") or []:
            yield f["text"]
        if block.get("type") == "context":
            for element in block.get("elements") or []:
                if "text" in element:
                    yield element["text"]


# ---------------------------------------------------------------- Slack's side of the Events API


@dataclass
class SlackEvents:
    """Builds signed requests as Slack sends them to `/slack/events`."""

    signing_secret: str
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def headers(
        self,
        body: str,
        *,
        timestamp: int | None = None,
        retry: int | None = None,
        content_type: str = "application/json",
    ) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        base = f"v0:{stamp}:{body}".encode()
        signature = "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
        }
        if retry is not None:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return headers

    def event_callback(self, event: dict[str, Any], *, event_id: str | None = None) -> str:
        n = next(self._ids)
        return json.dumps(
            {
                "token": "deprecated-verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": event,
                "type": "event_callback",
                "event_id": event_id or f"Ev{n:08d}",
                "event_time": int(float(event.get("event_ts", event.get("ts", time.time())))),
                "authorizations": [
                    {
                        "enterprise_id": None,
                        "team_id": TEAM_ID,
                        "user_id": BOT_USER_ID,
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
                "is_ext_shared_channel": False,
                "event_context": f"4-fake-{n}",
            },
            ensure_ascii=False,
        )

    def dm(self, user: str, text: str, ts: str, **extra: Any) -> dict[str, Any]:
        """A `message.im` event: `user` wrote `text` to the bot."""
        return {
            "type": "message",
            "channel": dm_channel(user),
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": TEAM_ID,
            "channel_type": "im",
            "client_msg_id": f"fake-{ts}",
            **extra,
        }

    def mention(
        self, user: str, channel: str, text: str, ts: str, *, thread_ts: str | None = None
    ) -> dict[str, Any]:
        """An `app_mention` event (`text` includes the `<@BOT>` mention, as Slack sends it)."""
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": TEAM_ID,
            "client_msg_id": f"fake-{ts}",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def channel_message(
        self, user: str, channel: str, text: str, ts: str, *, thread_ts: str | None = None
    ) -> dict[str, Any]:
        """A `message.channels` event."""
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": TEAM_ID,
            "channel_type": "channel",
            "client_msg_id": f"fake-{ts}",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = BOT_USER_ID
        return event

    def block_actions(
        self, user: str, message: Posted, button: dict[str, Any], *, action_ts: str | None = None
    ) -> str:
        """The form-encoded body Slack posts when `user` clicks `button` on `message`."""
        n = next(self._ids)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        payload = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "deprecated-verification-token",
            "container": container,
            "trigger_id": f"{n}.fake.trigger",
            "team": {"id": TEAM_ID, "domain": "fake-workspace"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "directmessage"},
            "message": _shape(message),
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{TEAM_ID}/{n}/fake",
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": button.get("block_id", f"blk{n}"),
                    "text": button["text"],
                    "value": button.get("value", ""),
                    "style": button.get("style"),
                    "type": "button",
                    "action_ts": action_ts or f"{time.time():.6f}",
                }
            ],
        }
        return urlencode({"payload": json.dumps(payload, ensure_ascii=False)})
