"""Persistence: conversations, transcripts, the inbox and the outbox, handoffs and agents
(SQLite or PostgreSQL)."""

# agents and handoffs import handoff_tables, which puts its tables on the shared metadata:
# whoever imports anything of bot.store (alembic's env.py included) sees the whole schema.
from bot.store.agents import AgentStore
from bot.store.db import create_engine, database_url, migrate
from bot.store.handoff_records import (
    Agent,
    AgentToken,
    Handoff,
    HandoffStatus,
    ModeChange,
    SurfaceRef,
)
from bot.store.handoffs import HandoffStore, Orphan
from bot.store.records import (
    AlreadyHandled,
    ConcurrentUpdate,
    InboxEvent,
    InboxHealth,
    NewEvent,
    OutboxItem,
    SavedTurn,
    StoredConversation,
    TranscriptEntry,
    TurnWrite,
    UnknownConversation,
)
from bot.store.repo import SqlStore

__all__ = [
    "Agent",
    "AgentStore",
    "AgentToken",
    "AlreadyHandled",
    "ConcurrentUpdate",
    "Handoff",
    "HandoffStatus",
    "HandoffStore",
    "InboxEvent",
    "InboxHealth",
    "ModeChange",
    "NewEvent",
    "Orphan",
    "OutboxItem",
    "SavedTurn",
    "SqlStore",
    "StoredConversation",
    "SurfaceRef",
    "TranscriptEntry",
    "TurnWrite",
    "UnknownConversation",
    "create_engine",
    "database_url",
    "migrate",
]
