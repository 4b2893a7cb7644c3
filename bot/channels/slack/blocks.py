"""Our outbound messages as Slack Block Kit, within Slack's limits, each with a `text` fallback.

The button `value` carries the question (`state`), the choice id and its label, so a click is
understood without looking anything up; `read_button_value` is the other half of that contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bot.channels.edge import MAX_LABEL, clip
from bot.models import CardOut, ChoicesOut, TextOut

ACTION_PREFIX: Final = "yarigai.choice."
"""Our buttons' `action_id`s start with this; clicks on anything else are not ours."""

MAX_BLOCKS: Final = 50
"""Blocks in one message."""

MAX_SECTION_TEXT: Final = 3000
"""Characters in a section's text."""

MAX_BUTTON_TEXT: Final = 75
"""Characters in a button's label."""

MAX_BUTTONS: Final = 25
"""Elements in one actions block."""

MAX_HEADER_TEXT: Final = 150
"""Characters in a header block."""

MAX_CONTEXT_TEXT: Final = 2000
"""Characters in one context element (our own margin under Slack's limit)."""

MAX_BUTTON_VALUE: Final = 2000
"""Characters in a button's value."""

MAX_FALLBACK_TEXT: Final = 4000
"""Characters in the `text` fallback: Slack cuts at 40,000, notifications show far less."""

SELECTED_MARK: Final = "✓ "
ANSWER_MARK: Final = "✅ "

Block = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackMessage:
    """One Slack message: what `chat.postMessage` / `chat.update` take besides the channel."""

    text: str
    blocks: tuple[Block, ...]

    def as_args(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": list(self.blocks)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonValue:
    state: str
    choice: str
    label: str | None = None


def render(
    message: TextOut | ChoicesOut | CardOut, *, speaker: str | None = None
) -> list[SlackMessage]:
    """One of our messages as one Slack message (more only if it exceeds 50 blocks).

    `speaker` (an agent's name) is shown in a context block above the first message.
    """
    if isinstance(message, ChoicesOut):
        blocks = _question(message)
        text = message.text or " / ".join(choice.label for choice in message.choices)
    elif isinstance(message, CardOut):
        blocks, text = _card(message), message.as_text()
    else:
        blocks, text = _sections(message.text), message.text
    if speaker:
        label = f"担当: {speaker}"
        blocks = [_context(label), *blocks]
        text = f"{label}\n{text}"
    return _split(blocks, text)


def render_answer(question: str, label: str) -> SlackMessage:
    """A clicked question as it stays in the history: the question and the answer, no buttons."""
    answer = _clip(f"{ANSWER_MARK}{label}", MAX_CONTEXT_TEXT)
    blocks = (*_sections(question), _context(answer))
    text = _clip(f"{question}\n{answer}".strip(), MAX_FALLBACK_TEXT)
    return SlackMessage(text=text, blocks=blocks)


def button_value(*, state: str, choice: str, label: str) -> str:
    value = json.dumps({"s": state, "c": choice, "l": label}, ensure_ascii=False)
    if len(value) > MAX_BUTTON_VALUE:  # the label is a courtesy for the transcript; ids are not
        value = json.dumps({"s": state, "c": choice}, ensure_ascii=False)
    return value


def read_button_value(value: object) -> ButtonValue | None:
    """The value of one of our buttons, or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    state, choice, label = data.get("s"), data.get("c"), data.get("l")
    if not isinstance(state, str) or not isinstance(choice, str) or not choice:
        return None
    if len(state) > MAX_LABEL or len(choice) > MAX_LABEL:
        return None  # our buttons carry flow ids, never that long: not one of ours
    return ButtonValue(
        state=state, choice=choice, label=clip(label, MAX_LABEL) if isinstance(label, str) else None
    )


# ---------------------------------------------------------------- private


def _question(message: ChoicesOut) -> list[Block]:
    buttons = [_button(message, index) for index in range(len(message.choices))]
    actions = [
        {"type": "actions", "elements": buttons[start : start + MAX_BUTTONS]}
        for start in range(0, len(buttons), MAX_BUTTONS)
    ]
    return [*_sections(message.text), *actions]


def _button(message: ChoicesOut, index: int) -> Block:
    choice = message.choices[index]
    label = f"{SELECTED_MARK}{choice.label}" if choice.selected else choice.label
    button: Block = {
        "type": "button",
        "text": _plain(_clip(label, MAX_BUTTON_TEXT)),
        # Unique within the message, as Slack requires; the meaning travels in `value`.
        "action_id": f"{ACTION_PREFIX}{index}",
        "value": button_value(state=message.state, choice=choice.id, label=choice.label),
    }
    if choice.selected:
        button["style"] = "primary"
    return button


def _card(card: CardOut) -> list[Block]:
    blocks: list[Block] = []
    if card.title.strip():
        blocks.append({"type": "header", "text": _plain(_clip(card.title, MAX_HEADER_TEXT))})
    for field in card.fields:
        text = f"*{_escape(field.label)}*\n{_escape(field.value)}"
        blocks += [_mrkdwn_section(part) for part in _chunks(text, MAX_SECTION_TEXT)]
    if card.footer.strip():
        blocks += _sections(card.footer)
    return blocks or _sections(card.as_text())


def _sections(text: str) -> list[Block]:
    """Plain text (flow wording is not markup) in as many sections as its length needs."""
    return [{"type": "section", "text": _plain(part)} for part in _chunks(text, MAX_SECTION_TEXT)]


def _mrkdwn_section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [_plain(_clip(text, MAX_CONTEXT_TEXT))]}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _split(blocks: Sequence[Block], text: str) -> list[SlackMessage]:
    if len(blocks) <= MAX_BLOCKS:
        return [SlackMessage(text=_clip(text, MAX_FALLBACK_TEXT), blocks=tuple(blocks))]
    parts = [blocks[i : i + MAX_BLOCKS] for i in range(0, len(blocks), MAX_BLOCKS)]
    return [
        SlackMessage(text=_clip("\n".join(_texts(part)), MAX_FALLBACK_TEXT), blocks=tuple(part))
        for part in parts
    ]


def _texts(blocks: Sequence[Block]) -> Iterator[str]:
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            yield str(text.get("text", ""))


def _chunks(text: str, limit: int) -> Iterator[str]:
    """`text` in pieces of at most `limit` characters, cut at a line break in the second half
    of a piece where there is one (not right after a short heading), else at the limit."""
    while len(text) > limit:
        cut = text.rfind("\n", limit // 2, limit)
        if cut <= 0:
            cut = limit
        yield text[:cut]
        text = text[cut:].lstrip("\n")
    if text:
        yield text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack's mrkdwn gives &, < and > meaning; these three must be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
