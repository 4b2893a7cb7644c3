"""LINE webhooks at the edge: the signature check, and LINE's JSON turned into our own types.

Nothing past this module sees LINE's event objects: each becomes a `LineEvent` whose
`content` is one of our inbound types (`TextIn`, `ChoiceIn`, `StartIn`) or a small marker of
what else happened (left, joined a group, sent a sticker, something we do not use).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationError

from bot.channels.edge import MAX_LABEL, clip, event_time
from bot.errors import BotError
from bot.models import ChoiceIn, Frozen, JoinedGroupIn, LeftIn, MediaIn, StartIn, TextIn
from bot.storable_text import loads_storable

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "x-line-signature"
"""Base64 HMAC-SHA256 of the raw body, keyed with the channel secret."""

# Postback data we write ourselves: {"s": question state, "c": choice id, "l": label}.
_STATE: Final = "s"
_CHOICE: Final = "c"
_LABEL: Final = "l"
_MEDIA: Final = frozenset({"image", "video", "audio", "file", "location", "sticker"})
MAX_POSTBACK: Final = 300
"""LINE's own limit on a postback's data; longer data is not from a button of ours."""


class MalformedWebhook(BotError):
    """A correctly signed body that is not a LINE webhook (not JSON, or no event list)."""


# The event kinds the service answers itself, under the names LINE gives them.
Unfollowed = LeftIn
GroupJoined = JoinedGroupIn
Media = MediaIn


class Ignored(Frozen):
    """An event the bot does not act on; `type` says which (LINE adds types without notice)."""

    kind: Literal["ignored"] = "ignored"
    type: str


Content = Annotated[
    TextIn | ChoiceIn | StartIn | LeftIn | JoinedGroupIn | MediaIn | Ignored,
    Field(discriminator="kind"),
]


class LineEvent(Frozen):
    """One webhook event, reduced to what the bot uses; kept in the inbox as JSON."""

    id: str  # webhookEventId: unique per event, the same on redelivery
    occurred_at: datetime
    standby: bool = False  # another channel (a module) is answering this chat: stay silent
    source: Literal["user", "group", "room", "none"]
    chat_id: str  # whom to answer: the user, group or room id
    reply_token: str | None = None
    content: Content

    @property
    def in_chat_with_user(self) -> bool:
        return self.source == "user" and bool(self.chat_id)


def sign(secret: str, body: bytes) -> str:
    """The signature LINE sends for `body`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` is LINE's for `body`; compared in constant time."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body), signature.strip())


def parse(body: bytes, *, destination: str | None = None) -> list[LineEvent]:
    """The events of a verified webhook body, oldest first; none when the body is for another
    bot than `destination` (this channel's bot user id, when known).

    A body that is not a webhook raises MalformedWebhook; a single event too broken to be
    recorded (no id, no plausible time) is logged and skipped, so its neighbours are still
    handled.
    """
    try:
        # Scrubbed at once: a NUL or lone surrogate a user managed to send must not fail the
        # store writes of the turn (and of the turns batched with it).
        document = loads_storable(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedWebhook("body is not JSON") from exc
    except RecursionError as exc:  # signed, but nested thousands deep: no webhook is
        raise MalformedWebhook("body is nested too deeply") from exc
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise MalformedWebhook("body has no 'events' list")
    if destination and document.get("destination") != destination:
        # Signed with our secret, yet for another bot: not ours to answer.
        log.warning("LINE webhook for another destination ignored")
        return []
    events: list[LineEvent] = []
    for raw in document["events"]:
        event = _event(raw)
        if event is None:
            # Log the shape, never the content: events carry what users wrote.
            keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            log.warning("skipping a LINE event without id or timestamp (keys: %s)", keys)
            continue
        events.append(event)
    events.sort(key=lambda e: e.occurred_at)
    return events


def postback_data(*, state: str, choice: str, label: str | None) -> str:
    """What a button carries back: the question it belongs to, the choice and its label."""
    data: dict[str, str] = {_STATE: state, _CHOICE: choice}
    if label:
        data[_LABEL] = label
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def choice_from_postback(data: str) -> ChoiceIn:
    """Our buttons carry JSON; anything else (a rich menu's plain `data`) names a choice or
    command directly, without a question to check staleness against."""
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get(_CHOICE), str):
        state = parsed.get(_STATE)
        label = parsed.get(_LABEL)
        return ChoiceIn(
            choice=clip(parsed[_CHOICE], MAX_LABEL),
            state=clip(state, MAX_LABEL) if isinstance(state, str) else None,
            label=clip(label, MAX_LABEL) if isinstance(label, str) else None,
        )
    return ChoiceIn(choice=clip(data.strip(), MAX_LABEL))


def event_from_json(payload: dict[str, Any]) -> LineEvent | None:
    """A recorded event back from the inbox; None if it is not one of ours."""
    try:
        return LineEvent.model_validate(payload)
    except ValidationError:
        return None


# ------------------------------------------------------------ private


def _event(raw: Any) -> LineEvent | None:
    if not isinstance(raw, dict):
        return None
    event_id = raw.get("webhookEventId")
    timestamp = raw.get("timestamp")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        return None
    # An int of milliseconds in range (not 10**20, not a float, not a bool).
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        return None
    occurred_at = event_time(timestamp / 1000)
    if occurred_at is None:
        return None
    source, chat_id = _source(raw.get("source"))
    if len(chat_id) > 255:
        return None
    token = raw.get("replyToken")
    return LineEvent(
        id=event_id,
        occurred_at=occurred_at,
        standby=raw.get("mode") == "standby",
        source=source,
        chat_id=chat_id,
        reply_token=token if isinstance(token, str) and token else None,
        content=_content(raw, source),
    )


def _source(raw: Any) -> tuple[Literal["user", "group", "room", "none"], str]:
    if not isinstance(raw, dict):
        return "none", ""
    kind = raw.get("type")
    if kind == "user":
        return "user", _str(raw.get("userId"))
    if kind == "group":
        return "group", _str(raw.get("groupId"))
    if kind == "room":
        return "room", _str(raw.get("roomId"))
    return "none", ""


def _content(
    raw: dict[str, Any], source: str
) -> TextIn | ChoiceIn | StartIn | LeftIn | JoinedGroupIn | MediaIn | Ignored:
    kind = clip(_str(raw.get("type")), MAX_LABEL) or "?"
    if source in ("group", "room"):
        # The bot is 1:1. What people write in a group is not ours to keep, so only the fact
        # that the bot joined survives parsing.
        return GroupJoined() if kind == "join" else Ignored(type=kind)
    if source != "user":
        return Ignored(type=kind)
    if kind == "message":
        message = raw.get("message")
        message_type = (
            clip(_str(message.get("type")), MAX_LABEL) if isinstance(message, dict) else ""
        )
        if message_type == "text" and isinstance(message, dict):
            return TextIn(text=clip(_str(message.get("text"))))
        if message_type in _MEDIA:
            return Media(type=message_type)
        return Ignored(type=f"message/{message_type or '?'}")
    if kind == "postback":
        postback = raw.get("postback")
        data = _str(postback.get("data")) if isinstance(postback, dict) else ""
        if len(data) > MAX_POSTBACK:
            return Ignored(type="postback/oversized")
        return choice_from_postback(data) if data else Ignored(type="postback/empty")
    if kind == "follow":
        follow = raw.get("follow")
        unblocked = isinstance(follow, dict) and follow.get("isUnblocked") is True
        return StartIn(returning=unblocked)
    if kind == "unfollow":
        return Unfollowed()
    return Ignored(type=kind)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
