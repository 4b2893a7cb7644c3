"""What channels may read of conversations (the `Conversations` port)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import ConversationKey
from bot.store import SqlStore


@dataclass(frozen=True, eq=False)
class ConversationLookup:
    store: SqlStore

    async def question_state(self, key: ConversationKey) -> str | None:
        stored = await self.store.load(key)
        return None if stored is None else stored.state.state

    async def is_known(self, key: ConversationKey) -> bool:
        """The conversation exists, or its first event is recorded and waiting."""
        if await self.store.load(key) is not None:
            return True
        pending = await self.store.pending_events(
            limit=1, channel=key.channel.value, address=key.address
        )
        return bool(pending)
