"""Persistence: conversations, transcripts, the inbox and the outbox (SQLite or PostgreSQL)."""

from bot.store.db import create_engine, database_url, migrate
from bot.store.records import (
    ConcurrentUpdate,
    InboxEvent,
    OutboxItem,
    SavedTurn,
    StoredConversation,
    TranscriptEntry,
    UnknownConversation,
)
from bot.store.repo import SqlStore

__all__ = [
    "ConcurrentUpdate",
    "InboxEvent",
    "OutboxItem",
    "SavedTurn",
    "SqlStore",
    "StoredConversation",
    "TranscriptEntry",
    "UnknownConversation",
    "create_engine",
    "database_url",
    "migrate",
]
