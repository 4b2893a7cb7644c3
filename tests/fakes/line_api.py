"""A fake LINE Messaging API on 127.0.0.1, and LINE's side of the webhook, for tests and bench.

`FakeLineApi` serves reply, push, the loading animation, the push quota and its consumption,
and rich menus (create, list, delete, the default; the image on a second port standing for the
data API host, `data_url`) over real HTTP (aiohttp in its own thread, so the app under test
talks to it through the SDK exactly as to LINE). It

- validates every request body against the schemas of LINE's `messaging-api.yml` (discriminated
  types dispatched as LINE does), plus the limits LINE documents but the spec leaves out
  (text length, label length, altText, loadingSeconds a multiple of 5);
- enforces reply tokens: minted for one chat, single use, expiring (`token_ttl`);
- honours `X-Line-Retry-Key`: a key seen before answers 409, as LINE does, and delivers nothing;
- records what each chat sees, in order, and every call;
- fails on request: a status (500, 429, 400...) for the next calls, optionally after accepting
  the request (LINE delivered, the answer was lost), or answers slowly (timeouts);
- goes down on request (`down()` / `up()`): meanwhile every call is answered 500, nothing
  delivered.

Reply tokens are self-contained (chat, mint time, nonce, MAC), so a load generator in another
process can mint them without asking the fake; `token_secret` must match.

`Webhooks` is LINE's sending side: it builds events shaped like LINE's reference examples,
checks them against `webhook.yml`, signs the body with the channel secret and posts it.

Run `python -m tests.fakes.line_api --port 8091` to serve it on its own (the benchmark does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import functools
import hashlib
import hmac
import importlib
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import yaml
from aiohttp import web
from openapi_schema_validator import OAS30Validator
from openapi_schema_validator import oas30_format_checker as _formats

REPO: Final = Path(__file__).resolve().parents[2]
ACCESS_TOKEN: Final = "fake-line-access-token"
CHANNEL_SECRET: Final = "fake-line-channel-secret"
TOKEN_SECRET: Final = b"fake-line-reply-tokens"
BOT_USER_ID: Final = "U" + "b0" * 16

Operation = Literal[
    "reply",
    "push",
    "loading",
    "quota",
    "quota consumption",
    "richmenu create",
    "richmenu list",
    "richmenu delete",
    "richmenu image",
    "richmenu default set",
    "richmenu default get",
    "richmenu default cancel",
]
_PATHS: Final[dict[str, Operation]] = {
    "/v2/bot/message/reply": "reply",
    "/v2/bot/message/push": "push",
    "/v2/bot/chat/loading/start": "loading",
}
_REQUEST_SCHEMAS: Final[dict[Operation, str]] = {
    "reply": "ReplyMessageRequest",
    "push": "PushMessageRequest",
    "loading": "ShowLoadingAnimationRequest",
    "richmenu create": "RichMenuRequest",
}
# Rich menus: LINE's documented limits (developers.line.biz, "Rich menu object", "Upload rich
# menu image"), which the spec leaves out.
RICH_MENU_WIDTH: Final = (800, 2500)
RICH_MENU_MIN_HEIGHT: Final = 250
RICH_MENU_MIN_RATIO: Final = 1.45  # width / height
MAX_RICH_MENU_AREAS: Final = 20
MAX_CHAT_BAR_TEXT: Final = 14
MAX_POSTBACK_DATA: Final = 300
MAX_RICH_MENU_IMAGE: Final = 1024 * 1024
MAX_RICH_MENUS: Final = 1000
# Documented at developers.line.biz but not expressed in messaging-api.yml.
MAX_TEXT: Final = 5000  # UTF-16 code units
MAX_ACTION_LABEL: Final = 20
MAX_DISPLAY_TEXT: Final = 300
MAX_ALT_TEXT: Final = 1500
_CHAT_ID: Final = "^[UCR][0-9a-f]{32}$"


def spec_dir() -> Path:
    """Where LINE's OpenAPI files are looked for: $LINE_SPEC_DIR, else ../shared/specs/line."""
    return Path(os.environ.get("LINE_SPEC_DIR") or REPO.parent / "shared" / "specs" / "line")


def require_spec() -> Path | None:
    """The spec directory, or None where it is not (a plain clone): the fakes then check
    bodies with the LINE SDK's own models, generated from the same spec, so every LINE test
    runs in any clone; the spec's stricter check is added where it is found."""
    directory = spec_dir()
    if (directory / "messaging-api.yml").is_file() and (directory / "webhook.yml").is_file():
        return directory
    return None


def validator_for(spec: Path | None, name: str) -> SpecValidator | SdkValidator:
    """The spec file `name`'s validator, or the SDK's models without the spec."""
    if spec is not None and (spec / name).is_file():
        return load_validator(spec / name)
    return SdkValidator()


@functools.cache
def load_validator(path: Path) -> SpecValidator:
    """Parsing the 180 KB spec takes a while: once per process."""
    return SpecValidator(path)


def new_user_id() -> str:
    return "U" + uuid.uuid4().hex


def sign(secret: str, body: bytes) -> str:
    """X-Line-Signature: base64 of HMAC-SHA256 over the raw body, keyed with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def mint_reply_token(chat_id: str, *, secret: bytes = TOKEN_SECRET, at: float | None = None) -> str:
    """A reply token for `chat_id`, as LINE puts in a webhook event."""
    issued = int((time.time() if at is None else at) * 1000)
    body = f"{chat_id}.{issued}.{secrets.token_hex(8)}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:16]
    return base64.urlsafe_b64encode(f"{body}.{mac}".encode()).decode().rstrip("=")


class SdkValidator:
    """Validates JSON with the LINE SDK's request and webhook models (`from_dict`), where the
    OpenAPI files are not at hand: required fields, types, message and action kinds."""

    _MODELS: Final = {
        "ReplyMessageRequest": "linebot.v3.messaging",
        "PushMessageRequest": "linebot.v3.messaging",
        "ShowLoadingAnimationRequest": "linebot.v3.messaging",
        "RichMenuRequest": "linebot.v3.messaging",
        "CallbackRequest": "linebot.v3.webhooks",
    }

    def errors(self, schema: str, instance: Any) -> list[dict[str, str]]:
        model = getattr(importlib.import_module(self._MODELS[schema]), schema)
        try:
            model.from_dict(instance)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return [{"message": str(error)[:300], "property": ""}]
        return []


class SpecValidator:
    """Validates JSON against one OpenAPI document's component schemas.

    OpenAPI's `discriminator` on a base schema (LINE's `Message`, `Action`, `FlexComponent`,
    `Event`...) is not JSON Schema: validating against the base alone checks only the common
    fields. So each such base becomes a `oneOf` over its mapping, with the discriminator, which
    the OAS 3.0 validator resolves to exactly the mapped schema; subtypes inherit from a copy of
    the base without the discriminator (else they would dispatch back to themselves).
    """

    def __init__(self, path: Path) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        self.schemas = _dispatching(document["components"]["schemas"])
        self._validators: dict[str, Any] = {}

    def errors(self, schema: str, instance: Any) -> list[dict[str, str]]:
        """LINE-style error details: [{"message", "property"}]; empty when valid."""
        validator = self._validators.get(schema)
        if validator is None:
            root = {
                "$ref": f"#/components/schemas/{schema}",
                "components": {"schemas": self.schemas},
            }
            validator = OAS30Validator(root, format_checker=_formats)
            self._validators[schema] = validator
        found = []
        for error in validator.iter_errors(instance):
            leaf = _deepest(error)
            found.append({"message": leaf.message[:300], "property": _property(leaf.absolute_path)})
        return found


@dataclass(frozen=True)
class Delivered:
    """One message as the chat sees it."""

    chat_id: str
    via: Literal["reply", "push"]
    message: dict[str, Any]
    request_id: str
    at: float  # time.time() when delivered

    @property
    def text(self) -> str:
        """What the bubble shows: the text, or a Flex message's altText."""
        return str(self.message.get("text") or self.message.get("altText") or "")

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Quick reply actions under this message."""
        items = (self.message.get("quickReply") or {}).get("items") or []
        return [item["action"] for item in items]

    def button(self, label: str) -> dict[str, Any]:
        """The quick reply action whose label is or ends with `label` (✓ marks aside)."""
        for action in self.buttons:
            if action["label"] == label or action["label"].endswith(label):
                return action
        raise KeyError(f"no button {label!r} among {[a['label'] for a in self.buttons]}")


@dataclass
class Call:
    """One request the fake answered."""

    operation: str
    status: int
    body: Any
    retry_key: str | None
    request_id: str
    arrived: float  # time.time()
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Fault:
    operation: Operation
    status: int
    times: int
    accept: bool  # deliver first, then answer with the failure
    delay: float
    message: str


class FakeLineApi:
    """See the module docstring. Use as a context manager or `start()` / `close()`."""

    def __init__(
        self,
        spec: Path | None = None,
        *,
        access_token: str = ACCESS_TOKEN,
        token_secret: bytes = TOKEN_SECRET,
        token_ttl: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
        validate: bool = True,
        validate_every: int = 1,
    ) -> None:
        """`validate_every` N > 1 checks one request in N against the spec (the benchmark:
        checking is the costliest thing this server does, and it shares the machine)."""
        found = spec if spec is not None else require_spec()
        self.validator = validator_for(found, "messaging-api.yml") if validate else None
        self.validate_every = validate_every
        self.checked = 0  # requests checked against the spec
        self._requests = 0
        self.access_token = access_token
        self.token_secret = token_secret
        self.token_ttl = token_ttl
        self.host = host
        self.port = port
        self.calls: list[Call] = []
        self.delivered: list[Delivered] = []
        # (chat, when its reply token was minted, when the reply arrived): reply latency
        self.replies: list[tuple[str, float, float]] = []
        self._used_tokens: set[str] = set()
        self._expired_tokens: set[str] = set()
        self._retry_keys: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._down = False  # `down()`: every call answers 500 until `up()`
        self.holding = 0  # requests being held back by `slow` right now
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._data_runner: web.AppRunner | None = None
        self.data_port = 0
        # The push allowance this month (None: no limit) and usage counted besides the pushes
        # the fake delivered (replies are free, as on LINE).
        self.quota_limit: int | None = 200
        self.extra_usage = 0
        self.rich_menus: dict[str, dict[str, Any]] = {}  # id -> the menu as created
        self.rich_menu_images: dict[str, tuple[str, bytes]] = {}  # id -> (content type, bytes)
        self.default_rich_menu: str | None = None

    # ------------------------------------------------------------ running

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_url(self) -> str:
        """The data API host (api-data.line.me): rich menu images."""
        return f"http://{self.host}:{self.data_port}"

    def start(self) -> FakeLineApi:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            loop = self._loop
            assert loop is not None
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-line-api", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        for runner in (self._runner, self._data_runner):
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FakeLineApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    async def serve_forever(self) -> None:
        """Serve on the current loop until cancelled (the command-line entry point)."""
        await self._listen()
        await asyncio.Event().wait()

    # ------------------------------------------------------------ test controls

    def reply_token(self, chat_id: str) -> str:
        return mint_reply_token(chat_id, secret=self.token_secret)

    def expire(self, token: str) -> None:
        """Make `token` too old, as if its minute had passed."""
        with self._lock:
            self._expired_tokens.add(token)

    def fail(
        self,
        operation: Operation,
        status: int,
        *,
        times: int = 1,
        accept: bool = False,
        message: str = "",
    ) -> None:
        """Answer the next `times` calls of `operation` with `status`; with `accept`, deliver
        the messages first (LINE did its part, the answer got lost)."""
        with self._lock:
            self._faults.append(
                _Fault(operation, status, times, accept, 0.0, message or _STATUS_TEXT[status])
            )

    def slow(
        self, operation: Operation, seconds: float, *, times: int = 1, accept: bool = False
    ) -> None:
        """Answer the next `times` calls of `operation` after `seconds`. Without `accept`, a
        client that gave up meanwhile gets nothing delivered; with it, delivery comes first."""
        with self._lock:
            self._faults.append(_Fault(operation, 200, times, accept, seconds, ""))

    def down(self) -> None:
        """An outage: every call is answered 500 and delivers nothing, until `up()`."""
        with self._lock:
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False

    def clear_faults(self) -> None:
        """Forget failures and delays not yet used up."""
        with self._lock:
            self._faults.clear()

    def seen(self, chat_id: str) -> list[Delivered]:
        """Every message `chat_id` has received, in order."""
        with self._lock:
            return [d for d in self.delivered if d.chat_id == chat_id]

    def texts(self, chat_id: str) -> list[str]:
        return [d.text for d in self.seen(chat_id)]

    def last(self, chat_id: str) -> Delivered:
        seen = self.seen(chat_id)
        if not seen:
            raise AssertionError(f"{chat_id} has received nothing")
        return seen[-1]

    def calls_of(self, operation: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.operation == operation]

    @property
    def invalid(self) -> list[Call]:
        """Calls refused because the body broke the spec or LINE's limits."""
        with self._lock:
            return [c for c in self.calls if c.errors]

    # ------------------------------------------------------------ serving

    async def _listen(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v2/bot/message/reply", self._handle)
        app.router.add_post("/v2/bot/message/push", self._handle)
        app.router.add_post("/v2/bot/chat/loading/start", self._handle)
        app.router.add_get("/v2/bot/info", self._bot_info)
        app.router.add_get("/v2/bot/message/quota", self._quota)
        app.router.add_get("/v2/bot/message/quota/consumption", self._consumption)
        app.router.add_post("/v2/bot/richmenu", self._create_rich_menu)
        app.router.add_get("/v2/bot/richmenu/list", self._list_rich_menus)
        app.router.add_delete("/v2/bot/richmenu/{id}", self._delete_rich_menu)
        app.router.add_post("/v2/bot/user/all/richmenu/{id}", self._set_default_rich_menu)
        app.router.add_get("/v2/bot/user/all/richmenu", self._get_default_rich_menu)
        app.router.add_delete("/v2/bot/user/all/richmenu", self._cancel_default_rich_menu)
        app.router.add_get("/_fake/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and hasattr(server, "sockets"):
            self.port = server.sockets[0].getsockname()[1]
        data = web.Application(client_max_size=4 * 1024 * 1024)
        data.router.add_post("/v2/bot/richmenu/{id}/content", self._upload_rich_menu_image)
        self._data_runner = web.AppRunner(data, access_log=None, shutdown_timeout=1.0)
        await self._data_runner.setup()
        data_site = web.TCPSite(self._data_runner, self.host, self.data_port)
        await data_site.start()
        data_server = data_site._server
        if self.data_port == 0 and data_server is not None and hasattr(data_server, "sockets"):
            self.data_port = data_server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------ quota and rich menus

    async def _quota(self, request: web.Request) -> web.Response:
        def act(call: Call) -> tuple[int, Any]:
            if self.quota_limit is None:
                return 200, {"type": "none"}
            return 200, {"type": "limited", "value": self.quota_limit}

        return await self._simple("quota", request, act)

    async def _consumption(self, request: web.Request) -> web.Response:
        def act(call: Call) -> tuple[int, Any]:
            pushed = sum(1 for d in self.delivered if d.via == "push")
            return 200, {"totalUsage": pushed + self.extra_usage}

        return await self._simple("quota consumption", request, act)

    async def _create_rich_menu(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None

        def act(call: Call) -> tuple[int, Any]:
            call.body = body
            if body is None:
                return 400, {"message": "The request body is not JSON"}
            errors = self._check("richmenu create", body, None)
            if errors:
                call.errors = errors
                return 400, {"message": "The request body is invalid", "details": errors}
            if len(self.rich_menus) >= MAX_RICH_MENUS:
                return 400, {"message": "Too many rich menus"}
            menu_id = "richmenu-" + uuid.uuid4().hex
            self.rich_menus[menu_id] = {"richMenuId": menu_id, **copy.deepcopy(body)}
            return 200, {"richMenuId": menu_id}

        return await self._simple("richmenu create", request, act)

    async def _list_rich_menus(self, request: web.Request) -> web.Response:
        def act(call: Call) -> tuple[int, Any]:
            return 200, {"richmenus": [copy.deepcopy(m) for m in self.rich_menus.values()]}

        return await self._simple("richmenu list", request, act)

    async def _delete_rich_menu(self, request: web.Request) -> web.Response:
        menu_id = request.match_info["id"]

        def act(call: Call) -> tuple[int, Any]:
            if self.rich_menus.pop(menu_id, None) is None:
                return 404, {"message": "Not found"}
            self.rich_menu_images.pop(menu_id, None)
            if self.default_rich_menu == menu_id:
                self.default_rich_menu = None
            return 200, {}

        return await self._simple("richmenu delete", request, act)

    async def _set_default_rich_menu(self, request: web.Request) -> web.Response:
        menu_id = request.match_info["id"]

        def act(call: Call) -> tuple[int, Any]:
            if menu_id not in self.rich_menus:
                return 404, {"message": "Not found"}
            if menu_id not in self.rich_menu_images:
                return 400, {"message": "must upload richmenu image before applying it to user"}
            self.default_rich_menu = menu_id
            return 200, {}

        return await self._simple("richmenu default set", request, act)

    async def _get_default_rich_menu(self, request: web.Request) -> web.Response:
        def act(call: Call) -> tuple[int, Any]:
            if self.default_rich_menu is None:
                return 404, {"message": "no default richmenu"}
            return 200, {"richMenuId": self.default_rich_menu}

        return await self._simple("richmenu default get", request, act)

    async def _cancel_default_rich_menu(self, request: web.Request) -> web.Response:
        def act(call: Call) -> tuple[int, Any]:
            self.default_rich_menu = None
            return 200, {}

        return await self._simple("richmenu default cancel", request, act)

    async def _upload_rich_menu_image(self, request: web.Request) -> web.Response:
        menu_id = request.match_info["id"]
        content_type = request.headers.get("Content-Type", "")
        image = await request.read()

        def act(call: Call) -> tuple[int, Any]:
            call.body = {"content_type": content_type, "bytes": len(image)}
            menu = self.rich_menus.get(menu_id)
            if menu is None:
                return 404, {"message": "Not found"}
            if menu_id in self.rich_menu_images:
                return 400, {"message": "An image has already been uploaded to the richmenu"}
            errors = _rich_menu_image_errors(content_type, image, menu["size"])
            if errors:
                call.errors = errors
                return 400, {"message": "Invalid image", "details": errors}
            self.rich_menu_images[menu_id] = (content_type, image)
            return 200, {}

        return await self._simple("richmenu image", request, act)

    async def _simple(self, operation: Operation, request: web.Request, act: Any) -> web.Response:
        """Authentication, `down()` and faults as for messages, then `act(call)` under the lock."""
        call = Call(operation, 0, None, None, uuid.uuid4().hex, time.time())
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return self._answer(call, 401, "Authentication failed")
        with self._lock:
            down = self._down
        if down:
            return self._answer(call, 500, _STATUS_TEXT[500])
        fault = self._take_fault(operation)
        if fault is not None and fault.status != 200:
            return self._answer(call, fault.status, fault.message)
        with self._lock:
            status, answer = act(call)
        call.status = status
        self._record(call)
        return web.json_response(
            answer, status=status, headers={"x-line-request-id": call.request_id}
        )

    async def _bot_info(self, request: web.Request) -> web.Response:
        """GET /v2/bot/info: whose webhooks carry `destination` BOT_USER_ID."""
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response({"message": "Authentication failed"}, status=401)
        info = {
            "userId": BOT_USER_ID,
            "basicId": "@123abcde",
            "displayName": "yarigai",
            "chatMode": "bot",
            "markAsReadMode": "auto",
        }
        return web.json_response(info)

    async def _handle(self, request: web.Request) -> web.Response:
        operation = _PATHS[request.path]
        retry_key = request.headers.get("X-Line-Retry-Key")
        call = Call(operation, 0, None, retry_key, uuid.uuid4().hex, time.time())
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return self._answer(call, 401, "Authentication failed")
        with self._lock:
            down = self._down
        if down:
            return self._answer(call, 500, _STATUS_TEXT[500])
        try:
            call.body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._answer(call, 400, "The request body is not JSON")
        errors = self._check(operation, call.body, retry_key)
        if errors:
            call.errors = errors
            return self._answer(call, 400, f"The request body has {len(errors)} error(s)")
        fault = self._take_fault(operation)
        if fault is not None and not fault.accept:
            if fault.delay:
                await self._hold(fault.delay, request)
                if _gone(request):
                    # The client gave up waiting: LINE never got to act on it.
                    return self._answer(call, 499, "Client closed the request")
            if fault.status != 200:
                return self._answer(call, fault.status, fault.message)
        status, answer, headers = self._act(operation, call.body, retry_key, call)
        if fault is not None and fault.accept:
            if fault.delay:
                await self._hold(fault.delay, request)
            if fault.status != 200:
                return self._answer(call, fault.status, fault.message)
        call.status = status
        self._record(call)
        return web.json_response(
            answer, status=status, headers={"x-line-request-id": call.request_id, **headers}
        )

    async def _hold(self, seconds: float, request: web.Request) -> None:
        """Wait `seconds`, or until the client hangs up."""
        with self._lock:
            self.holding += 1
        try:
            deadline = time.monotonic() + seconds
            # aiohttp has no event for a client hanging up: look at the transport now and then.
            while time.monotonic() < deadline and not _gone(request):  # noqa: ASYNC110
                await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        finally:
            with self._lock:
                self.holding -= 1

    def _check(
        self, operation: Operation, body: Any, retry_key: str | None
    ) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = []
        self._requests += 1
        if self.validator is not None and self._requests % self.validate_every == 0:
            self.checked += 1
            errors += self.validator.errors(_REQUEST_SCHEMAS[operation], body)
        if not isinstance(body, dict):
            return errors or [{"message": "must be an object", "property": ""}]
        if operation == "push":
            if not _is_chat_id(body.get("to")):
                errors.append({"message": "Invalid to", "property": "to"})
            if retry_key is not None and not _is_uuid(retry_key):
                errors.append({"message": "must be a UUID", "property": "X-Line-Retry-Key"})
        if operation == "richmenu create":
            return errors + _rich_menu_limits(body)
        if operation == "loading":
            seconds = body.get("loadingSeconds", 20)
            if isinstance(seconds, int) and seconds % 5:
                errors.append({"message": "must be a multiple of 5", "property": "loadingSeconds"})
            if not _is_chat_id(body.get("chatId")) or not str(body.get("chatId")).startswith("U"):
                errors.append({"message": "must be a user ID", "property": "chatId"})
        for index, message in enumerate(body.get("messages") or []):
            errors += _documented_limits(message, f"messages[{index}]")
        return errors

    def _act(
        self, operation: Operation, body: dict[str, Any], retry_key: str | None, call: Call
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        request_id, arrived = call.request_id, call.arrived
        with self._lock:
            if operation == "loading":
                return 202, {}, {}
            if operation == "push":
                chat_id = body["to"]
                if retry_key is not None:
                    accepted = self._retry_keys.get(retry_key)
                    if accepted is not None:
                        return (
                            409,
                            {"message": "The retry key is already accepted"},
                            {"x-line-accepted-request-id": accepted},
                        )
                    self._retry_keys[retry_key] = request_id
            else:
                chat_id = self._spend(body["replyToken"], arrived)
                if chat_id is None:
                    return 400, {"message": "Invalid reply token"}, {}
            sent = []
            for message in body["messages"]:
                self.delivered.append(Delivered(chat_id, operation, message, request_id, arrived))
                sent.append(
                    {"id": str(secrets.randbelow(10**18)), "quoteToken": secrets.token_urlsafe(12)}
                )
            return 200, {"sentMessages": sent}, {}

    def _spend(self, token: str, now: float) -> str | None:
        """The chat a valid, unused, unexpired token belongs to (and use it up)."""
        try:
            decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            chat_id, issued, nonce, mac = decoded.split(".")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = hmac.new(
            self.token_secret, f"{chat_id}.{issued}.{nonce}".encode(), hashlib.sha256
        )
        if not hmac.compare_digest(expected.hexdigest()[:16], mac):
            return None
        if token in self._used_tokens or token in self._expired_tokens:
            return None
        if now - int(issued) / 1000 > self.token_ttl:
            return None
        self._used_tokens.add(token)
        self.replies.append((chat_id, int(issued) / 1000, now))
        return chat_id

    def _take_fault(self, operation: Operation) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _answer(self, call: Call, status: int, message: str) -> web.Response:
        call.status = status
        self._record(call)
        payload: dict[str, Any] = {"message": message}
        if call.errors:
            payload["details"] = call.errors
        return web.json_response(
            payload, status=status, headers={"x-line-request-id": call.request_id}
        )

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    async def _stats(self, request: web.Request) -> web.Response:
        """For the benchmark: replies (chat, token minted, arrived) from the `since`-th on (a
        poll need not fetch thousands again), their total, pushes, statuses."""
        since = int(request.query.get("since", "0"))
        pushed_since = int(request.query.get("pushed_since", "0"))
        with self._lock:
            replied = [list(r) for r in self.replies[since:]]
            total = len(self.replies)
            pushed = [[d.chat_id, d.at] for d in self.delivered if d.via == "push"][pushed_since:]
            invalid = len([c for c in self.calls if c.errors])
            statuses: dict[str, int] = {}
            for call in self.calls:
                statuses[str(call.status)] = statuses.get(str(call.status), 0) + 1
        return web.json_response(
            {
                "replied": replied,
                "replies": total,
                "pushed": pushed,
                "invalid": invalid,
                "checked": self.checked,
                "statuses": statuses,
            }
        )


class Webhooks:
    """LINE's sending side: builds events, checks them against webhook.yml, signs and posts."""

    def __init__(
        self,
        url: str,
        *,
        fake: FakeLineApi,
        secret: str = CHANNEL_SECRET,
        spec: Path | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`client`: posts go through it (kept connections) rather than a new client each;
        many posts add up, a client's TLS set-up alone costs tens of milliseconds."""
        self.url = url
        self.fake = fake
        self.secret = secret
        self.client = client
        self.validator = validator_for(spec if spec is not None else require_spec(), "webhook.yml")
        self._clock = int(time.time() * 1000)

    # ------------------------------------------------------------ events

    def text(self, user: str, text: str) -> dict[str, Any]:
        return self.event(
            "message",
            user,
            message={
                "type": "text",
                "id": _message_id(),
                "quoteToken": secrets.token_urlsafe(16),
                "text": text,
            },
        )

    def tap(self, user: str, action: Mapping[str, Any]) -> dict[str, Any]:
        """What LINE sends when the user taps a quick reply button the bot sent."""
        if action["type"] == "message":
            return self.text(user, action["text"])
        return self.event("postback", user, postback={"data": action["data"]})

    def postback(self, user: str, data: str) -> dict[str, Any]:
        return self.event("postback", user, postback={"data": data})

    def follow(self, user: str, *, unblocked: bool = False) -> dict[str, Any]:
        return self.event("follow", user, follow={"isUnblocked": unblocked})

    def unfollow(self, user: str) -> dict[str, Any]:
        return self.event("unfollow", user, reply=False)

    def sticker(self, user: str) -> dict[str, Any]:
        return self.event(
            "message",
            user,
            message={
                "type": "sticker",
                "id": _message_id(),
                "quoteToken": secrets.token_urlsafe(16),
                "packageId": "446",
                "stickerId": "1988",
                "stickerResourceType": "STATIC",
                "keywords": ["happy", "smile"],
            },
        )

    def image(self, user: str) -> dict[str, Any]:
        return self.event(
            "message",
            user,
            message={
                "type": "image",
                "id": _message_id(),
                "quoteToken": secrets.token_urlsafe(16),
                "contentProvider": {"type": "line"},
            },
        )

    def join(self, group: str) -> dict[str, Any]:
        return self.event("join", None, source={"type": "group", "groupId": group})

    def group_text(self, group: str, user: str, text: str) -> dict[str, Any]:
        return self.event(
            "message",
            None,
            source={"type": "group", "groupId": group, "userId": user},
            message={"type": "text", "id": _message_id(), "quoteToken": "q", "text": text},
        )

    def event(
        self,
        kind: str,
        user: str | None,
        *,
        source: dict[str, Any] | None = None,
        reply: bool = True,
        mode: str = "active",
        **fields: Any,
    ) -> dict[str, Any]:
        """Any event; `user` gives a 1:1 source, `source` another. Timestamps only increase."""
        self._clock = max(self._clock + 1, int(time.time() * 1000))
        source = source or {"type": "user", "userId": user}
        chat = source.get("userId") or source.get("groupId") or source.get("roomId")
        event: dict[str, Any] = {
            "type": kind,
            "mode": mode,
            "timestamp": self._clock,
            "source": source,
            "webhookEventId": _ulid(self._clock),
            "deliveryContext": {"isRedelivery": False},
        }
        if reply and chat:
            event["replyToken"] = self.fake.reply_token(chat)
        event.update(fields)
        return event

    # ------------------------------------------------------------ sending

    def body(
        self, *events: Mapping[str, Any], redelivery: bool = False, ascii_only: bool = False
    ) -> bytes:
        """A webhook body for `events`, checked against webhook.yml. `ascii_only` escapes
        everything else as `\\uXXXX`, the only way a lone surrogate can travel in JSON."""
        sent = [copy.deepcopy(dict(e)) for e in events]
        for event in sent:
            event["deliveryContext"] = {"isRedelivery": redelivery}
        document = {"destination": BOT_USER_ID, "events": sent}
        errors = self.validator.errors("CallbackRequest", document)
        if errors:
            raise AssertionError(f"test event breaks webhook.yml: {errors}")
        return json.dumps(document, ensure_ascii=ascii_only).encode()

    async def send(
        self,
        *events: Mapping[str, Any],
        redelivery: bool = False,
        signature: str | None = None,
        ascii_only: bool = False,
    ) -> httpx.Response:
        """POST the signed body, as LINE does; returns the bot's answer."""
        body = self.body(*events, redelivery=redelivery, ascii_only=ascii_only)
        return await self.post(body, signature=signature)

    async def post(
        self, body: bytes, *, signature: str | None = None, url: str | None = None
    ) -> httpx.Response:
        """Post a webhook body to `url` (default: this sender's), signed unless told otherwise."""
        url = self.url if url is None else url
        headers = {
            "content-type": "application/json; charset=utf-8",
            "x-line-signature": sign(self.secret, body) if signature is None else signature,
            "user-agent": "LineBotWebhook/2.0",
        }
        if self.client is not None:
            return await self.client.post(url, content=body, headers=headers)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, content=body, headers=headers)


# ------------------------------------------------------------ private

_STATUS_TEXT: Final = {
    400: "Bad request",
    403: "Forbidden",
    409: "Conflict",
    429: "The API rate limit has been exceeded. Try again later.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _dispatching(schemas: dict[str, Any]) -> dict[str, Any]:
    bases = {
        name
        for name, schema in schemas.items()
        if "discriminator" in schema and not {"oneOf", "anyOf", "allOf"} & set(schema)
    }
    out: dict[str, Any] = {}
    for name, original in schemas.items():
        schema = copy.deepcopy(original)
        if "allOf" in schema:
            schema["allOf"] = [_to_base(item, bases) for item in schema["allOf"]]
        if name in bases:
            discriminator = schema.pop("discriminator")
            out[f"{name}__base"] = schema
            out[name] = {
                "oneOf": [{"$ref": ref} for ref in discriminator["mapping"].values()],
                "discriminator": discriminator,
            }
        else:
            out[name] = schema
    return out


def _to_base(item: Any, bases: set[str]) -> Any:
    ref = item.get("$ref") if isinstance(item, dict) else None
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in bases:
        return {"$ref": f"{ref}__base"}
    return item


def _deepest(error: Any) -> Any:
    while error.context:
        error = min(error.context, key=lambda e: -len(e.absolute_path))
    return error


def _property(path: Iterator[Any] | Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _documented_limits(message: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(message, dict):
        return []
    errors = []
    if message.get("type") == "text":
        text = message.get("text", "")
        if not isinstance(text, str) or not text:
            errors.append({"message": "must not be empty", "property": f"{where}.text"})
        elif len(text.encode("utf-16-le")) // 2 > MAX_TEXT:
            errors.append({"message": f"over {MAX_TEXT} characters", "property": f"{where}.text"})
    if message.get("type") == "flex":
        alt = message.get("altText", "")
        if not alt or len(alt) > MAX_ALT_TEXT:
            errors.append({"message": "length must be 1-1500", "property": f"{where}.altText"})
        errors += _flex_texts(message.get("contents"), f"{where}.contents")
    items = (message.get("quickReply") or {}).get("items") or []
    for index, item in enumerate(items):
        action = item.get("action") or {}
        at = f"{where}.quickReply.items[{index}].action"
        label = action.get("label")
        if not isinstance(label, str) or not label or len(label) > MAX_ACTION_LABEL:
            errors.append({"message": "label length must be 1-20", "property": f"{at}.label"})
        display = action.get("displayText")
        if display is not None and (not display or len(display) > MAX_DISPLAY_TEXT):
            errors.append({"message": "length must be 1-300", "property": f"{at}.displayText"})
        if action.get("type") == "postback" and not action.get("data"):
            errors.append({"message": "must not be empty", "property": f"{at}.data"})
    return errors


def _flex_texts(node: Any, where: str) -> list[dict[str, str]]:
    if isinstance(node, list):
        return [e for i, n in enumerate(node) for e in _flex_texts(n, f"{where}[{i}]")]
    if not isinstance(node, dict):
        return []
    errors = []
    if node.get("type") == "text" and not node.get("text") and not node.get("contents"):
        errors.append({"message": "must not be empty", "property": f"{where}.text"})
    for key in ("header", "hero", "body", "footer", "contents"):
        if key in node:
            errors += _flex_texts(node[key], f"{where}.{key}")
    return errors


def _rich_menu_limits(menu: dict[str, Any]) -> list[dict[str, str]]:
    """What LINE documents of a rich menu beyond the spec's schema."""
    errors: list[dict[str, str]] = []
    for required in ("size", "selected", "name", "chatBarText", "areas"):
        if required not in menu:
            errors.append({"message": "must be specified", "property": required})
    size = menu.get("size") or {}
    width, height = size.get("width", 0), size.get("height", 0)
    if not RICH_MENU_WIDTH[0] <= width <= RICH_MENU_WIDTH[1]:
        errors.append({"message": "must be between 800 and 2500", "property": "size.width"})
    if height < RICH_MENU_MIN_HEIGHT or (height and width / height < RICH_MENU_MIN_RATIO):
        errors.append({"message": "invalid aspect ratio", "property": "size.height"})
    if len(str(menu.get("chatBarText", ""))) > MAX_CHAT_BAR_TEXT:
        errors.append({"message": "size must be between 0 and 14", "property": "chatBarText"})
    areas = menu.get("areas") or []
    if len(areas) > MAX_RICH_MENU_AREAS:
        errors.append({"message": "size must be between 0 and 20", "property": "areas"})
    for index, area in enumerate(areas):
        where = f"areas[{index}]"
        bounds = area.get("bounds") or {}
        x, y = bounds.get("x", 0), bounds.get("y", 0)
        if x + bounds.get("width", 0) > width or y + bounds.get("height", 0) > height:
            errors.append(
                {"message": "must be inside the rich menu", "property": f"{where}.bounds"}
            )
        action = area.get("action") or {}
        if action.get("type") == "postback":
            if len(str(action.get("data", ""))) > MAX_POSTBACK_DATA:
                errors.append({"message": "too long", "property": f"{where}.action.data"})
            if len(str(action.get("displayText", ""))) > MAX_DISPLAY_TEXT:
                errors.append({"message": "too long", "property": f"{where}.action.displayText"})
        if len(str(action.get("label", ""))) > MAX_ACTION_LABEL:
            errors.append({"message": "too long", "property": f"{where}.action.label"})
    return errors


def _rich_menu_image_errors(
    content_type: str, image: bytes, size: dict[str, int]
) -> list[dict[str, str]]:
    """JPEG or PNG, at most 1 MB, exactly the menu's size (LINE refuses anything else)."""
    if content_type not in ("image/png", "image/jpeg"):
        return [{"message": "must be image/png or image/jpeg", "property": "Content-Type"}]
    if len(image) > MAX_RICH_MENU_IMAGE:
        return [{"message": "must be 1 MB or smaller", "property": "body"}]
    dimensions = _png_size(image) if content_type == "image/png" else None
    if content_type == "image/png" and dimensions is None:
        return [{"message": "not a PNG image", "property": "body"}]
    if dimensions is not None and dimensions != (size.get("width"), size.get("height")):
        return [{"message": f"image is {dimensions}, the menu {size}", "property": "body"}]
    return []


def _png_size(image: bytes) -> tuple[int, int] | None:
    """A PNG's width and height from its IHDR chunk (without an image library)."""
    if len(image) < 24 or image[:8] != b"\x89PNG\r\n\x1a\n" or image[12:16] != b"IHDR":
        return None
    return int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _is_chat_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(_CHAT_ID, value) is not None


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _message_id() -> str:
    return str(secrets.randbelow(10**17) + 10**17)


def _ulid(millis: int) -> str:
    value = (millis << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake LINE Messaging API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--spec", type=Path, default=None)
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--validate-every", type=int, default=1, metavar="N")
    args = parser.parse_args()
    fake = FakeLineApi(
        args.spec,
        host=args.host,
        port=args.port,
        validate=not args.no_validate,
        validate_every=args.validate_every,
    )
    asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
