"""Our outbound messages as LINE message objects, within LINE's documented limits.

Choices become quick reply buttons (postback actions whose `displayText` shows the label as the
user's own bubble), the summary card a Flex bubble, long text several bubbles.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Final, TypeVar

from linebot.v3.messaging import (
    FlexBox,
    FlexBubble,
    FlexComponent,
    FlexMessage,
    FlexSeparator,
    FlexText,
    Message,
    MessageAction,
    PostbackAction,
    QuickReply,
    QuickReplyItem,
    Sender,
    TextMessage,
)

from bot.channels.line.webhook import postback_data
from bot.models import CardOut, ChoicesOut, TextOut

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_REQUEST: Final = 5
"""Reply and push both take at most five message objects."""
MAX_QUICK_REPLIES: Final = 13
MAX_LABEL: Final = 20
"""Quick reply button labels; longer ones are clipped (the tap still shows the whole label)."""
MAX_TEXT: Final = 5000
"""Text message length, in UTF-16 code units as LINE counts them."""
MAX_ALT_TEXT: Final = 1500
MAX_POSTBACK_DATA: Final = 300
MAX_DISPLAY_TEXT: Final = 300
MAX_SENDER_NAME: Final = 20

RENDERED_KEPT: Final = 4096
"""Rendered messages kept for reuse (questions mostly; a few kilobytes each)."""

SELECTED_MARK: Final = "✓ "
"""Prefix of a multi-select button already picked: LINE buttons have no toggled state."""

_T = TypeVar("_T")
_GREY: Final = "#888888"


def render(
    messages: Sequence[TextOut | ChoicesOut | CardOut], *, sender_name: str | None = None
) -> list[Message]:
    """LINE message objects for a turn, in order; may be more than one request's worth.

    The objects may be shared with other turns' (see `_render_one`): read them, never change
    them."""
    rendered = [item for message in messages for item in _render_one(message)]
    if sender_name:
        sender = Sender(name=clip(sender_name, MAX_SENDER_NAME))
        rendered = [item.copy(update={"sender": sender}) for item in rendered]
    return rendered


def batches(items: Sequence[_T], size: int = MAX_MESSAGES_PER_REQUEST) -> list[list[_T]]:
    """`items` in runs of at most `size`: one reply or push request each."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """`text` in pieces of at most `limit` UTF-16 code units, cut after a line break where one
    is near, never inside a surrogate pair; an empty text stays one (empty) piece."""
    if _utf16_length(text) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = max(_fit(text, start, limit), start + 1)
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline >= start + (end - start) // 2:
                end = newline + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def clip(text: str, limit: int) -> str:
    """`text` shortened to `limit` UTF-16 code units, with an ellipsis when cut."""
    if _utf16_length(text) <= limit:
        return text
    return text[: _fit(text, 0, limit - 1)] + "…"


# ------------------------------------------------------------ private


@functools.lru_cache(maxsize=RENDERED_KEPT)
def _render_one(message: TextOut | ChoicesOut | CardOut) -> tuple[Message, ...]:
    """One message as LINE objects. Kept: a flow asks the same questions of every user, and
    building the SDK's objects (validated on creation) costs more than the rest of a reply."""
    if isinstance(message, CardOut):
        return (_flex(message),)
    parts = split_text(message.text)
    if isinstance(message, ChoicesOut):
        # Quick replies show under the newest message only, so they ride on the last part.
        last = TextMessage(text=parts[-1], quickReply=_quick_reply(message))
        return (*(TextMessage(text=part) for part in parts[:-1]), last)
    return tuple(TextMessage(text=part) for part in parts)


def _quick_reply(question: ChoicesOut) -> QuickReply | None:
    choices = list(question.choices)
    if len(choices) > MAX_QUICK_REPLIES:
        # The flow linter refuses this; should a flow slip through, keep the last button
        # (a multi-select's done, or the offer of an agent) rather than silently drop it.
        log.warning(
            "question %s has %d choices; LINE shows %d",
            question.state,
            len(choices),
            MAX_QUICK_REPLIES,
        )
        choices = [*choices[: MAX_QUICK_REPLIES - 1], choices[-1]]
    items = [
        QuickReplyItem(
            action=_action(
                state=question.state,
                choice=c.id,
                label=f"{SELECTED_MARK}{c.label}" if c.selected else c.label,
                full_label=c.label,
            )
        )
        for c in choices
    ]
    return QuickReply(items=items) if items else None


def _action(
    *, state: str, choice: str, label: str, full_label: str
) -> PostbackAction | MessageAction:
    shown = clip(label, MAX_LABEL)
    display = clip(full_label, MAX_DISPLAY_TEXT)
    for data in (
        postback_data(state=state, choice=choice, label=full_label),
        postback_data(state=state, choice=choice, label=None),
    ):
        if len(data) <= MAX_POSTBACK_DATA:
            return PostbackAction(label=shown, data=data, displayText=display)
    # Ids this long do not fit a postback: send the label as text, which the engine reads
    # like a typed answer.
    return MessageAction(label=shown, text=display)


def _flex(card: CardOut) -> FlexMessage:
    body: list[FlexComponent] = [
        FlexText(text=card.title or " ", weight="bold", size="lg", wrap=True)
    ]
    for field in card.fields:
        if not field.value:
            continue
        body.append(FlexSeparator(margin="md"))
        body.append(
            FlexBox(
                layout="vertical",
                margin="md",
                spacing="xs",
                contents=[
                    FlexText(text=field.label or " ", size="sm", color=_GREY, wrap=True),
                    FlexText(text=field.value, size="sm", wrap=True),
                ],
            )
        )
    if card.footer:
        body.append(FlexText(text=card.footer, size="xs", color=_GREY, wrap=True, margin="lg"))
    return FlexMessage(
        # What notifications, the chat list and old clients show instead of the bubble.
        altText=clip(card.as_text(), MAX_ALT_TEXT),
        contents=FlexBubble(body=FlexBox(layout="vertical", contents=body)),
    )


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, start: int, limit: int) -> int:
    """The largest end such that text[start:end] is at most `limit` UTF-16 units."""
    units = 0
    for index in range(start, len(text)):
        units += 2 if ord(text[index]) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)
