"""The conversation service over a real store: batches of turns and what one bad turn does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.core.service import ConversationService, Reply
from bot.engine import Engine
from bot.errors import StoreError
from bot.flows.loader import load_flow
from bot.models import Channel, ConversationKey, StartIn, TextIn
from bot.store import SqlStore

MINI = Path(__file__).parent / "flows" / "mini.yaml"


async def test_one_bad_turn_never_fails_the_turns_batched_with_it(store: SqlStore) -> None:
    """Text a store refuses (U+0000 on PostgreSQL) fails its own turn only: after the batch
    fails, each turn of it runs alone, and the others are saved and answered."""
    service = ConversationService(
        store=store, engines={"mini": Engine(load_flow(MINI))}, default_flow="mini"
    )
    keys = [ConversationKey(channel=Channel.WEB, address=f"session-{n:02}") for n in range(12)]
    await asyncio.gather(*(service.handle(key, StartIn()) for key in keys))
    bad = 5
    outcomes = await asyncio.gather(
        *(
            service.handle(key, TextIn(text="経理\x00です" if index == bad else "経理です"))
            for index, key in enumerate(keys)
        ),
        return_exceptions=True,
    )
    innocent = [o for index, o in enumerate(outcomes) if index != bad]
    assert all(isinstance(o, Reply) for o in innocent), innocent
    postgres = store.engine.dialect.name == "postgresql"
    if postgres:
        assert isinstance(outcomes[bad], StoreError)
    for index, key in enumerate(keys):
        stored = await store.load(key)
        assert stored is not None
        said = [m.text for m in await store.transcript(stored.id) if m.direction == "in"]
        if index != bad:
            assert said == ["経理です"]
        elif postgres:
            assert said == []  # refused whole: nothing of the turn was written
