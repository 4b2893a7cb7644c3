"""The conversation in a terminal: numbered choices, the same service and store as the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
            event: ChoiceIn | TextIn = TextIn(text=line)
            if question and line.isdigit() and 1 <= int(line) <= len(question.choices):
                picked = question.choices[int(line) - 1]
                event = ChoiceIn(choice=picked.id, state=question.state, label=picked.label)
            reply = await runtime.service.handle(key, event)
            if not reply.messages and reply.mode.value != "bot":
                write("（担当者からの返信をお待ちください）")
            question = _show(reply.messages, write) or question
    finally:
        await runtime.close()


def _show(messages: tuple[Message, ...], write: Callable[[str], None]) -> ChoicesOut | None:
    question = None
    for message in messages:
        if isinstance(message, ChoicesOut):
            write(f"bot: {message.text}")
            for i, choice in enumerate(message.choices, 1):
                mark = "✓ " if choice.selected else ""
                write(f"  {i}. {mark}{choice.label}")
            question = message
        elif isinstance(message, CardOut):
            write("┌ " + message.as_text().replace("\n", "\n│ "))
        else:
            write(f"bot: {message.text}")
    return question
