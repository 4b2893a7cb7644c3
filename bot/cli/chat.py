"""The conversation in a terminal: numbered choices, the same service and store as the server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Final

from bot.config import Settings
from bot.models import (
    CardOut,
    Channel,
    ChoiceIn,
    ChoicesOut,
    ConversationKey,
    Message,
    StartIn,
    TextIn,
)
from bot.wiring import build

_NUMBERS: Final = re.compile(r"\s*\d+(?:\s*[ ,、，]\s*\d+)*\s*")
_SEPARATORS: Final = re.compile(r"\s*[ ,、，]\s*")
# Longest first: a phrase is replaced before a shorter one inside it.
_TERMINAL_WORDS: Final = (
    ("下のボタンをタップするか", "番号を入力するか"),
    ("ボタンをタップするか", "番号を入力するか"),
    ("下のボタンから選んで", "番号で選んで"),
    ("ボタンから選ぶか", "番号で選ぶか"),
    ("ボタンで答えれば", "番号で答えれば"),
    ("そのボタンは", "その番号は"),
    ("ボタン", "番号"),
)


async def run_chat(
    settings: Settings,
    *,
    user: str = "terminal",
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
) -> None:
    # The service and store only: no channel, no background job.
    runtime = await build(settings, "all", channels=())
    key = ConversationKey(channel=Channel.CLI, address=user)
    try:
        returning = await runtime.store.load(key) is not None
        reply = await runtime.service.handle(key, StartIn(returning=returning))
        question = _show(reply.messages, write)
        while True:
            line = (await asyncio.to_thread(read, "> ")).strip()
            if not line:
                continue
            if line in {"/quit", "/exit"}:
                return
            events: list[ChoiceIn | TextIn] = _picked(line, question) or [TextIn(text=line)]
            for event in events:  # several numbers pick several choices of a multi-select
                reply = await runtime.service.handle(key, event)
            if not reply.messages and reply.mode.value != "bot":
                write("（担当者からの返信をお待ちください）")
            question = _show(reply.messages, write) or question
    finally:
        await runtime.close()


def _picked(line: str, question: ChoicesOut | None) -> list[ChoiceIn | TextIn]:
    """The choices typed by number: `2`, or `1 3` / `1,3` in a multi-select question."""
    if question is None or not _NUMBERS.fullmatch(line):
        return []
    numbers = [int(n) for n in _SEPARATORS.split(line.strip())]
    if len(numbers) > 1 and not question.multi:
        return []
    if not all(1 <= n <= len(question.choices) for n in numbers):
        return []
    picked = [question.choices[n - 1] for n in numbers]
    return [ChoiceIn(choice=c.id, state=question.state, label=c.label) for c in picked]


def _show(messages: tuple[Message, ...], write: Callable[[str], None]) -> ChoicesOut | None:
    question = None
    for message in messages:
        if isinstance(message, ChoicesOut):
            write(f"bot: {_in_terminal(message.text)}")
            for i, choice in enumerate(message.choices, 1):
                mark = "✓ " if choice.selected else ""
                write(f"  {i}. {mark}{choice.label}")
            if message.multi:
                write("  （番号をいくつでも。例: 1 3）")
            question = message
        elif isinstance(message, CardOut):
            write("┌ " + _in_terminal(message.as_text()).replace("\n", "\n│ "))
        else:
            write(f"bot: {_in_terminal(message.text)}")
    return question


def _in_terminal(text: str) -> str:
    """The flow speaks of buttons; here they are numbers."""
    for button, number in _TERMINAL_WORDS:
        text = text.replace(button, number)
    return text
