"""Persistence on SQLite or PostgreSQL: one module per aggregate (conversations, inbox, outbox,
handoffs, agents) over one schema."""

from bot.records import (
    Handoff,
    HandoffOutcome,
    HandoffStatus,
    InboxEvent,
    InboxHealth,
    ModeChange,
    NewEvent,
    OutboxItem,
    SurfaceRef,
    Timer,
)
from bot.store.agents import Agent, AgentStore, AgentToken
from bot.store.bookings import BookingStore
from bot.store.canned import CannedReply, CannedReplyStore
from bot.store.conversations import (
    AlreadyHandled,
    ConcurrentUpdate,
    SavedTurn,
    StoredConversation,
    TimerGone,
    TranscriptEntry,
    TurnWrite,
    UnknownConversation,
)
from bot.store.db import create_engine, database_url, migrate
from bot.store.handoffs import HandoffStore, Orphan, Preview
from bot.store.sql import SqlStore

__all__ = [
    "Agent",
    "AgentStore",
    "AgentToken",
    "AlreadyHandled",
    "BookingStore",
    "CannedReply",
    "CannedReplyStore",
    "ConcurrentUpdate",
    "Handoff",
    "HandoffOutcome",
    "HandoffStatus",
    "HandoffStore",
    "InboxEvent",
    "InboxHealth",
    "ModeChange",
    "NewEvent",
    "Orphan",
    "OutboxItem",
    "Preview",
    "SavedTurn",
    "SqlStore",
    "StoredConversation",
    "SurfaceRef",
    "Timer",
    "TimerGone",
    "TranscriptEntry",
    "TurnWrite",
    "UnknownConversation",
    "create_engine",
    "database_url",
    "migrate",
]
