"""`SqlStore`: the whole store on one engine, its methods grouped by aggregate."""

from __future__ import annotations

from bot.store.conversations import Conversations
from bot.store.facts import Abandonment
from bot.store.inbox import Inbox
from bot.store.leases import Leases
from bot.store.outbox import Outbox
from bot.store.timers import Timers
from bot.store.users import Users


class SqlStore(Conversations, Inbox, Outbox, Leases, Timers, Users, Abandonment):
    """Conversations, the inbox, the outbox, leases, timers, users' data and analytics' marks on
    SQLite or PostgreSQL; each method is one transaction (handoffs and agents have their own stores on the same engine)."""
