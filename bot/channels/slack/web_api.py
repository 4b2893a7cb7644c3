"""Slack Web API calls, one way for every Slack module: `call` turns any failure into a
`SlackApiFailure` carrying Slack's error code (the user channel in `slack.py`, the agent
channel in `agents/actions.py`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import DeliveryFailed
from bot.tracing import span


class SlackApiFailure(DeliveryFailed):
    """A Slack Web API call failed; `code` is Slack's `error` (or the HTTP/transport failure)."""

    def __init__(self, method: str, code: str) -> None:
        self.method = method
        self.code = code
        super().__init__(f"{method}: {code}")

    def __repr__(self) -> str:
        return f"SlackApiFailure(method={self.method!r}, code={self.code!r})"


async def call(method: str, pending: Awaitable[AsyncSlackResponse]) -> dict[str, Any]:
    """Await one Web API call; any failure becomes a SlackApiFailure with Slack's error code.

    429s are waited out inside the client (its rate-limit retry handler honours Retry-After);
    what arrives here has already been retried as far as it sensibly can be.
    """
    try:
        with span(f"slack {method}"):
            response = await pending
    except SlackApiError as error:
        data = error.response.data
        code = data.get("error") if isinstance(data, dict) else None
        raise SlackApiFailure(method, str(code or f"http_{error.response.status_code}")) from error
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as error:
        raise SlackApiFailure(method, type(error).__name__) from error
    data = response.data
    return data if isinstance(data, dict) else {}
