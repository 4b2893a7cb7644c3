"""Slack request bodies in, our own frozen types out: which requests the bot acts on, and as what.

Conversation addresses: a DM is its IM channel (`D123`); a mention in a channel starts a
conversation in the mention's thread (`C123:1700000000.000100`), which later replies in that
thread continue. Nothing past this module sees a raw Slack payload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from bot.channels.edge import MAX_LABEL, MAX_TEXT, clip, event_time
from bot.channels.slack.blocks import ACTION_PREFIX, read_button_value
from bot.models import ChoiceIn, Frozen, MediaIn, StartIn, TextIn

Origin = Literal["dm", "mention", "thread", "button"]
"""How the request reached us; a `thread` reply only counts in a conversation that exists."""


class Clicked(Frozen):
    """The message whose button was clicked, so it can be updated to show the answer."""

    channel: str
    ts: str
    question: str
    label: str


class SlackInbound(Frozen):
    """One thing a user did in Slack that the conversation should answer."""

    event_id: str  # unique per user action, whatever Slack resends: the inbox dedups by it
    address: str
    origin: Origin
    occurred_at: datetime
    user: str
    event: Annotated[TextIn | ChoiceIn | StartIn | MediaIn, Field(discriminator="kind")]
    clicked: Clicked | None = None


class Destination(Frozen):
    """Where replies to a conversation go."""

    channel: str
    thread_ts: str | None = None


def parse(body: Mapping[str, Any], *, bot_user_id: str | None) -> SlackInbound | None:
    """The user action in a verified Slack request body, or None when there is nothing to do
    (other event types and subtypes, edits, deletions, bots, channel chatter, other buttons)."""
    try:
        if body.get("type") == "event_callback":
            event = body.get("event")
            if (
                not isinstance(event, Mapping)
                or event.get("bot_id")
                or event.get("subtype") not in (None, "file_share")
            ):
                return None  # bots (ours included), edits, deletions, joins
            if event.get("type") == "message":
                return _message(event, bot_user_id)
            if event.get("type") == "app_mention":
                return _mention(event, bot_user_id)
            return None
        if body.get("type") == "block_actions":
            return _click(body)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a shape we do not know is not ours to answer
    return None


def address_of(channel: str, thread_ts: str | None) -> str:
    return f"{channel}:{thread_ts}" if thread_ts else channel


def destination(address: str) -> Destination:
    channel, _, thread_ts = address.partition(":")
    return Destination(channel=channel, thread_ts=thread_ts or None)


def plain_text(text: str, *, bot_user_id: str | None) -> str:
    """Slack's message markup as the words the user typed: our mention dropped, links and other
    mentions as their labels, `&amp;`, `&lt;`, `&gt;` unescaped."""

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if bot_user_id and target == f"@{bot_user_id}":
            return ""
        return label or target

    words = _LINK.sub(link, text)
    words = words.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(words.split())[:MAX_TEXT]


# ---------------------------------------------------------------- private

_LINK: Final = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def _message(event: Mapping[str, Any], bot_user_id: str | None) -> SlackInbound | None:
    user, channel, ts = event["user"], event["channel"], event["ts"]
    if user == bot_user_id or event.get("hidden"):
        return None
    thread_ts = event.get("thread_ts")
    if event.get("channel_type") == "im":
        origin: Origin = "dm"
        address = channel  # a thread inside a DM is still the same conversation
    elif thread_ts and thread_ts != ts:
        origin, address = "thread", address_of(channel, thread_ts)
    else:
        return None  # channel chatter: the bot speaks in channels only when mentioned
    text = plain_text(str(event.get("text", "")), bot_user_id=bot_user_id)
    said: TextIn | MediaIn = TextIn(text=text)
    if not text:
        if event.get("subtype") != "file_share":
            return None
        said = MediaIn(type=_file_kind(event.get("files")))  # a file alone: thanked, re-asked
    return SlackInbound(
        # The message's (channel, ts), not Slack's event_id: a thread reply that mentions the
        # bot arrives both as `message` and `app_mention`, two event ids for one message.
        event_id=f"{channel}:{ts}",
        address=address,
        origin=origin,
        occurred_at=_time(ts),
        user=user,
        event=said,
    )


def _mention(event: Mapping[str, Any], bot_user_id: str | None) -> SlackInbound | None:
    user, channel, ts = event["user"], event["channel"], event["ts"]
    if user == bot_user_id:
        return None
    text = plain_text(str(event.get("text", "")), bot_user_id=bot_user_id)
    # A bare mention greets a new conversation and offers to continue an existing one.
    said: TextIn | StartIn = TextIn(text=text) if text else StartIn(returning=True)
    return SlackInbound(
        event_id=f"{channel}:{ts}",
        address=address_of(channel, event.get("thread_ts") or ts),
        origin="mention",
        occurred_at=_time(ts),
        user=user,
        event=said,
    )


def _click(body: Mapping[str, Any]) -> SlackInbound | None:
    actions = body.get("actions") or []
    if len(actions) != 1 or not str(actions[0].get("action_id", "")).startswith(ACTION_PREFIX):
        return None
    action = actions[0]
    value = read_button_value(action.get("value"))
    if value is None:
        return None
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or body["channel"]["id"]
    message_ts = container.get("message_ts") or message["ts"]
    thread_ts = container.get("thread_ts") or message.get("thread_ts")
    # IM channel ids start with D; our messages in channels are always in the conversation's
    # thread, so the thread names the conversation.
    address = channel if channel.startswith("D") else address_of(channel, thread_ts or message_ts)
    label = clip(
        value.label or str(action.get("text", {}).get("text", "")) or value.choice, MAX_LABEL
    )
    user = body["user"]["id"]
    return SlackInbound(
        event_id=f"click:{user}:{action['action_ts']}",
        address=address,
        origin="button",
        occurred_at=_time(action["action_ts"]),
        user=user,
        event=ChoiceIn(choice=value.choice, state=value.state, label=label),
        clicked=Clicked(
            channel=channel,
            ts=message_ts,
            question=clip(str(message.get("text", ""))),
            label=label,
        ),
    )


def _time(ts: str) -> datetime:
    """Slack's `ts`; a ValueError (the request is then not ours) unless a plausible time:
    `inf`, `nan` or 1e20 are signed by Slack's secret all the same."""
    moment = event_time(float(ts))
    if moment is None:
        raise ValueError(f"implausible Slack ts {ts[:32]!r}")
    return moment


def _file_kind(files: Any) -> str:
    """What the user shared, in the words the service thanks for (image, video, audio, file)."""
    first = files[0] if isinstance(files, list) and files and isinstance(files[0], Mapping) else {}
    mimetype = str(first.get("mimetype", ""))
    for kind in ("image", "video", "audio"):
        if mimetype.startswith(kind + "/"):
            return kind
    return "file"
