"""The Messaging API calls the bot makes, through the official async SDK, with LINE's kinds of
failure turned into our own errors (the retry policy in `delivery` acts on the kind)."""

from __future__ import annotations

import json
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    Message,
    PushMessageRequest,
    ReplyMessageRequest,
    ShowLoadingAnimationRequest,
)
from pydantic.v1 import PrivateAttr
from yarl import URL

from bot.errors import ChannelError
from bot.tracing import span

log = logging.getLogger(__name__)

REQUEST_TIMEOUT: Final = 10.0
"""Seconds for one API call; LINE answers in well under a second when healthy."""
CONNECTIONS: Final = 64
"""Parallel connections to the API (the SDK's default is 5 per CPU)."""
WIRE_KEPT: Final = 4096
"""Serialised messages kept for reuse."""


class LineApiError(ChannelError):
    """LINE refused or failed a call; carries what LINE said, never the request body."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        operation: str,
        *,
        status: int = 0,
        message: str = "",
        details: Sequence[str] = (),
        request_id: str | None = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.message = message
        self.details = tuple(details)
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"LINE {self.operation} failed"
        if self.status:
            text += f" with {self.status}"
        if self.message:
            text += f": {self.message}"
        if self.details:
            text += f" ({'; '.join(self.details)})"
        if self.request_id:
            text += f" [x-line-request-id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(operation={self.operation!r}, status={self.status}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class LineBadRequest(LineApiError):
    """4xx: the request is wrong and would fail again; not retried."""


class LineInvalidReplyToken(LineBadRequest):
    """The reply token is expired or already used: push instead."""


class LineConflict(LineApiError):
    """409: a request with this retry key was accepted before, so the message was delivered."""


class LineRateLimited(LineApiError):
    """429: too many requests; wait, then retry."""

    retryable = True


class LineServerError(LineApiError):
    """5xx: LINE failed; retry with the same retry key (it may have been delivered)."""

    retryable = True


class LineTimedOut(LineApiError):
    """No answer in time, or no connection; retry with the same retry key."""

    retryable = True


class WireReply(ReplyMessageRequest):  # type: ignore[misc]
    """The SDK's reply request, its messages serialised beforehand (see `LineApi._wired`); the
    rest is serialised as the SDK does, and a test holds the two to the same JSON."""

    _wire: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _with_messages(self, self._wire)


class WirePush(PushMessageRequest):  # type: ignore[misc]
    """The SDK's push request, its messages serialised beforehand (as `WireReply`)."""

    _wire: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _with_messages(self, self._wire)


def _with_messages(request: Any, wired: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = request.dict(by_alias=True, exclude={"messages"}, exclude_none=True)
    body["messages"] = wired
    return body


@dataclass(frozen=True, slots=True)
class LineQuota:
    """Messages LINE lets the channel push this month (`limit`, None: no limit) and used."""

    limit: int | None
    used: int

    @property
    def used_ratio(self) -> float | None:
        return self.used / self.limit if self.limit else None


class LineApi:
    """Reply, push and the loading animation for one channel access token."""

    def __init__(self, *, client: AsyncApiClient, timeout: float = REQUEST_TIMEOUT) -> None:
        self._client = client
        self._api = AsyncMessagingApi(client)
        self._timeout = timeout
        self._wire: OrderedDict[int, tuple[Message, dict[str, Any]]] = OrderedDict()

    @classmethod
    async def open(
        cls, *, base_url: str, access_token: str, request_timeout: float = REQUEST_TIMEOUT
    ) -> LineApi:
        """Build the SDK client; needs a running event loop (aiohttp's session binds to it)."""
        configuration = Configuration(host=base_url.rstrip("/"), access_token=access_token)
        configuration.connection_pool_maxsize = CONNECTIONS
        # The SDK's aiohttp session trusts the environment, which costs two trips to a thread
        # on every call (proxy variables, ~/.netrc). The proxy is read once here instead, and
        # the SDK is given a session that does not look again.
        configuration.proxy, proxy_auth = _proxy_for(configuration.host)
        if proxy_auth is not None:
            configuration.proxy_headers = {"Proxy-Authorization": proxy_auth.encode()}
        client = AsyncApiClient(configuration)
        trusting = client.rest_client.pool_manager
        client.rest_client.pool_manager = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=ssl.create_default_context()),
            trust_env=False,
        )
        await trusting.close()
        return cls(client=client, timeout=request_timeout)

    async def close(self) -> None:
        await self._client.close()

    async def reply(self, reply_token: str, messages: Sequence[Message]) -> None:
        request = WireReply(replyToken=reply_token, messages=list(messages))
        request._wire = self._wired(messages)
        await self._call(
            "reply",
            lambda: self._api.reply_message_with_http_info(request, _request_timeout=self._timeout),
        )

    async def push(self, to: str, messages: Sequence[Message], *, retry_key: str) -> None:
        """Push; LINE delivers a given `retry_key` at most once (409 on a repeat)."""
        request = WirePush(to=to, messages=list(messages))
        request._wire = self._wired(messages)
        await self._call(
            "push",
            lambda: self._api.push_message_with_http_info(
                request, x_line_retry_key=retry_key, _request_timeout=self._timeout
            ),
        )

    async def bot_user_id(self) -> str:
        """This channel's bot user id (GET /v2/bot/info): the `destination` of its webhooks."""
        info = await self._call(
            "bot info", lambda: self._api.get_bot_info(_request_timeout=self._timeout)
        )
        user_id: str = info.user_id
        return user_id

    async def quota(self) -> LineQuota:
        """This month's push allowance and what is used of it (GET /v2/bot/message/quota and
        /quota/consumption); replies are free and not counted."""
        limit = await self._call(
            "quota", lambda: self._api.get_message_quota(_request_timeout=self._timeout)
        )
        used = await self._call(
            "quota consumption",
            lambda: self._api.get_message_quota_consumption(_request_timeout=self._timeout),
        )
        limited = str(getattr(limit.type, "value", limit.type)) == "limited"
        return LineQuota(limit=int(limit.value) if limited else None, used=int(used.total_usage))

    async def show_loading(self, chat_id: str, *, seconds: int = 5) -> None:
        """The typing dots in a 1:1 chat; they vanish when our next message arrives."""
        request = ShowLoadingAnimationRequest(chatId=chat_id, loadingSeconds=seconds)
        await self._call(
            "loading",
            lambda: self._api.show_loading_animation_with_http_info(
                request, _request_timeout=self._timeout
            ),
        )

    def _wired(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """Each message as the SDK serialises it, once per message object: rendered messages
        are reused (`line_render`), and the SDK's serialisation costs more than the rest of a
        call. Kept with the object itself, so an id is never mistaken for another's."""
        wired = []
        for message in messages:
            kept = self._wire.get(id(message))
            if kept is None or kept[0] is not message:
                kept = (message, message.to_dict())
                self._wire[id(message)] = kept
                if len(self._wire) > WIRE_KEPT:
                    self._wire.popitem(last=False)
            else:
                self._wire.move_to_end(id(message))
            wired.append(kept[1])
        return wired

    async def _call(self, operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            with span(f"line {operation}"):
                return await call()
        except ApiException as exc:
            raise translate_error(operation, exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Connection refused, reset, or no answer in time: LINE may or may not have
            # acted on the request.
            raise LineTimedOut(operation, message=type(exc).__name__) from None


def _proxy_for(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy HTTPS_PROXY/HTTP_PROXY name for `url` (NO_PROXY respected), if any, and its
    credentials (from the proxy URL or ~/.netrc)."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return str(proxy), auth


def translate_error(operation: str, exc: ApiException) -> LineApiError:
    status = int(exc.status or 0)
    message, details = _error_body(exc.body)
    headers = exc.headers or {}
    request_id = headers.get("x-line-request-id") if hasattr(headers, "get") else None
    kind: type[LineApiError]
    if status == 409:
        kind = LineConflict
    elif status == 429:
        kind = LineRateLimited
    elif status >= 500:
        kind = LineServerError
    elif operation == "reply" and status == 400 and "reply token" in message.lower():
        kind = LineInvalidReplyToken
    else:
        kind = LineBadRequest
    return kind(operation, status=status, message=message, details=details, request_id=request_id)


def _error_body(body: Any) -> tuple[str, list[str]]:
    """LINE's error `message` and `details` (each `property: message`)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) and body else {}
    except json.JSONDecodeError:
        return body[:200] if isinstance(body, str) else "", []
    if not isinstance(parsed, dict):
        return "", []
    details = []
    for detail in parsed.get("details") or []:
        if isinstance(detail, dict):
            where = detail.get("property")
            what = detail.get("message", "")
            details.append(f"{where}: {what}" if where else str(what))
    return str(parsed.get("message", "")), details
