"""How channel adapters plug into the app and how others reach a user on any channel.

A channel module provides a `ChannelPlugin`: `mount` runs when the app is created (routes must
exist before start-up), `setup` runs in the lifespan with the started runtime (clients, worker
handlers, senders, teardown). `bot/app.py` lists the plugins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fastapi import FastAPI

from bot.config import Settings
from bot.models import CardOut, ChoicesOut, ConversationKey, TextOut
from bot.wiring import Runtime


class ChannelPlugin(Protocol):
    def mount(self, app: FastAPI, settings: Settings) -> None: ...

    async def setup(self, app: FastAPI, runtime: Runtime) -> None: ...


class Sender(Protocol):
    """Delivers messages to a user outside a webhook reply (agent replies, late answers).

    `idempotency_key` is stable for one logical message, so a retried send is never delivered
    twice; `sender_name` shows who speaks (e.g. the agent's name) where the channel can.
    """

    async def send(
        self,
        key: ConversationKey,
        messages: Sequence[TextOut | ChoicesOut | CardOut],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None: ...
