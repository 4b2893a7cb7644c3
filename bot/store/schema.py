"""The schema as SQLAlchemy Core tables, portable between SQLite and PostgreSQL: conversations,
transcripts, inbox, outbox, leases, timers, then handoffs, mode changes and agents.

Migrations in `migrations/versions/` create these; a test checks the two never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Explicit names so migrations can refer to constraints on both backends (SQLite has no
# ALTER CONSTRAINT; batch mode needs names to drop or replace one).
NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = sa.MetaData(naming_convention=NAMING)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id: Final = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime, stored as UTC; SQLite keeps no offset, so naive values read as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it keeps every stored time comparable.
            raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


conversations: Final = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column("flow_version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(128), nullable=False),
    sa.Column("slots", sa.JSON(), nullable=False),
    sa.Column("selection", sa.JSON(), nullable=False),
    sa.Column("misses", sa.Integer(), nullable=False),
    sa.Column("pending_confirm", sa.JSON(), nullable=False),
    sa.Column("return_to", sa.String(128), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("agent", sa.String(255), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # The A/B variant of the flow the conversation runs ('' without variants), and when its
    # current run began (the flow's first funnel step; migration 0010): every fact carries both.
    sa.Column("variant", sa.String(32), nullable=False, server_default=""),
    sa.Column("run_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("channel", "address"),
    sa.CheckConstraint("mode IN ('bot', 'waiting', 'agent')", name="mode"),
    sa.Index(None, "state"),
    sa.Index(None, "mode"),
    sa.Index(None, "status", "updated_at"),  # retention: inactive and old
)

messages: Final = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("sender", sa.String(16), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("body", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("direction IN ('in', 'out')", name="direction"),
    sa.CheckConstraint("sender IN ('user', 'bot', 'agent', 'note', 'system')", name="sender"),
    sa.Index(None, "conversation_id", "id"),
)

inbox: Final = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    # NULL once purged: the row stays so a late redelivery is still recognised as seen.
    sa.Column("payload", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("processed_at", UtcDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.UniqueConstraint("channel", "event_id"),
    # A user's events once run: what forgetting a user or purging a conversation looks up.
    # Rows enter it when run, not when recorded: the webhook's insert then adds keys that grow
    # at the end (id, time; LINE's event ids are time-ordered too), not an entry at a random
    # page of a by-user index, which was a fifth of an acknowledgement's CPU. A user's pending
    # events are found in `ix_inbox_pending`.
    sa.Index(
        "ix_inbox_done_by_address",
        "channel",
        "address",
        sqlite_where=sa.text("processed_at IS NOT NULL"),
        postgresql_where=sa.text("processed_at IS NOT NULL"),
    ),
    # Pending events in the order they happened. It also holds channel and address, so a
    # user's pending events are picked out of it without reading the rows (1.8 ms instead of
    # 5.5 ms for 30,000 pending), and it stays small: rows leave it once run.
    sa.Index(
        "ix_inbox_pending",
        "occurred_at",
        "id",
        "channel",
        "address",
        sqlite_where=sa.text("processed_at IS NULL"),
        postgresql_where=sa.text("processed_at IS NULL"),
    ),
    # Events settled as failed (`error` set): counted for /metrics.
    sa.Index(
        "ix_inbox_failed",
        "id",
        sqlite_where=sa.text("error IS NOT NULL"),
        postgresql_where=sa.text("error IS NOT NULL"),
    ),
)

outbox: Final = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    # The reply token of the event this answers, and when that happened: a delivery cut short
    # (a crash) is retried by reply while the token is fresh (migration 0004).
    sa.Column("reply_token", sa.String(255), nullable=True),
    sa.Column("event_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
    sa.Index(None, "conversation_id"),
    sa.Index(
        "ix_outbox_pending",
        "id",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)

leases: Final = sa.Table(
    "leases",
    metadata,
    # "conversation:<channel>:<address>" or "job:<name>"
    sa.Column("name", sa.String(320), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),  # the process (host:pid:random)
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)


# Durable timers (migration 0008): a row per timer, fired by the background jobs exactly once
# (the firing turn marks it in its own transaction), so a restart loses and repeats none.
timers: Final = sa.Table(
    "timers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("key", sa.String(255), nullable=False),  # the scheduler's name for it
    sa.Column("kind", sa.String(64), nullable=False),  # which handler runs it
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),  # gone with the user's data
        nullable=True,
    ),
    sa.Column("due_at", UtcDateTime(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("fired_at", UtcDateTime(), nullable=True),
    sa.Column("cancelled_at", UtcDateTime(), nullable=True),
    sa.Column("outcome", sa.String(64), nullable=True),  # "sent", "skipped: <why>", "failed"
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.UniqueConstraint("key"),
    sa.Index(None, "conversation_id"),
    sa.Index(
        "ix_timers_due",
        "due_at",
        sqlite_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
        postgresql_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
    ),
)

# What analytics reads, recorded as turns and handoffs happen (never message text): a state
# entered, an answer given, a funnel step reached, a handoff requested/claimed/released, a
# conversation ended or abandoned. Personal data only through their conversation (cascade).
FACT_KINDS: Final = (
    "entered",  # state: the state entered
    "answer",  # state: the question; value: the choice id (a multi-select's ids, comma-joined)
    "pick",  # a multi-select's pick: state, value, how (the answer itself comes at its end)
    "not_understood",  # state: the question a typed message was not understood at
    "result",  # state: where a flow's `insights.results` slot was worked out; value: it
    "step",  # value: the funnel step first reached in this run (once per run); an event
    # step is '@' and the event's kind ('@handoff_claimed')
    "handoff_requested",
    "handoff_claimed",
    "handoff_released",  # value: the outcome tag, when the agent gave one
    "booking_made",  # a booking made (in the booking's transaction; a reschedule is not one)
    "ended",  # state: the end state reached
    "abandoned",  # state: where the conversation sat ABANDON_AFTER_HOURS without a message
    "cross",  # state: the rows question; value: "row answer|column answer" (insights.cross)
)

facts: Final = sa.Table(
    "facts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),  # forget and purge take them
        nullable=False,
    ),
    sa.Column("run_at", UtcDateTime(), nullable=False),  # the run's start: the cohort
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column("flow_version", sa.String(64), nullable=False),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("state", sa.String(128), nullable=True),
    sa.Column("value", sa.String(255), nullable=True),
    sa.Column("how", sa.String(16), nullable=True),  # tapped, typed
    sa.Column("stage", sa.String(32), nullable=True),  # the NLU stage that understood typed text
    sa.Column("seconds", sa.Float(), nullable=True),  # answer: since the question was asked
    sa.Index(None, "conversation_id", "run_at"),
    # A funnel step counts once per run, whatever goes back and forth.
    sa.Index(
        "uq_facts_step",
        "conversation_id",
        "run_at",
        "value",
        unique=True,
        sqlite_where=sa.text("kind = 'step'"),
        postgresql_where=sa.text("kind = 'step'"),
    ),
)

# The facts counted per day of their run (a Japanese day), flow, version, variant, channel and
# what happened: the figures /console/insights reads, kept up in the same transaction as the
# facts, so the page sums a few rows a day instead of scanning millions of facts. Counts of
# nobody in particular: deleting a user's data deletes their facts, not these sums.
fact_counts: Final = sa.Table(
    "fact_counts",
    metadata,
    sa.Column("flow", sa.String(64), nullable=False),
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("state", sa.String(128), nullable=False),  # '' for none
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("how", sa.String(16), nullable=False),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("flow_version", sa.String(64), nullable=False),
    sa.Column("n", sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint(
        "flow", "kind", "day", "state", "value", "how", "variant", "channel", "flow_version"
    ),
    # What every insights query reads, from the index alone on PostgreSQL.
    sa.Index(
        None,
        "flow",
        "kind",
        "day",
        postgresql_include=["state", "value", "how", "variant", "channel", "n"],
    ),
)


# ---------------------------------------------------------------- handoffs and agents

HANDOFF_STATUSES: Final = ("waiting", "claimed", "released", "cancelled")
OPEN_STATUSES: Final = ("waiting", "claimed")

handoffs: Final = sa.Table(
    "handoffs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),  # purge relies on it
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("summary", sa.JSON(), nullable=False),
    sa.Column("requested_at", UtcDateTime(), nullable=False),
    sa.Column("claimed_at", UtcDateTime(), nullable=True),
    sa.Column("agent", sa.String(255), nullable=True),  # who holds it: an agent name, "slack:U…"
    sa.Column("agent_name", sa.String(255), nullable=True),  # shown to the user as the sender
    sa.Column("closed_at", UtcDateTime(), nullable=True),  # released or cancelled
    sa.Column("timeout_notified_at", UtcDateTime(), nullable=True),
    # How it ended for the agency, chosen on release (`HandoffOutcome`; migration 0011_console).
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.CheckConstraint("status IN ('waiting', 'claimed', 'released', 'cancelled')", name="status"),
    # At most one open handoff per conversation, enforced by the database: a request
    # repeated by a retry or by two processes finds the existing one (ON CONFLICT).
    sa.Index(
        "uq_handoffs_open_conversation",
        "conversation_id",
        unique=True,
        sqlite_where=sa.text("status IN ('waiting', 'claimed')"),
        postgresql_where=sa.text("status IN ('waiting', 'claimed')"),
    ),
    sa.Index(None, "conversation_id", "id"),
    sa.Index(None, "status", "requested_at"),
    sa.Index(None, "closed_at"),  # the console's history, newest first
)

# Where a handoff shows on an agent surface (e.g. surface "slack", ref = the card's ts).
# A table rather than a JSON column on `handoffs`: a surface finds the handoff by its own
# reference (a thread reply names only the thread) through a unique index, and two surfaces
# writing their refs at once never overwrite each other.
handoff_refs: Final = sa.Table(
    "handoff_refs",
    metadata,
    sa.Column(
        "handoff_id",
        Id,
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("surface", sa.String(32), primary_key=True),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.UniqueConstraint("surface", "ref"),
)

# What an agent read last of a handoff's transcript: the console's unread marker, per agent.
handoff_reads: Final = sa.Table(
    "handoff_reads",
    metadata,
    sa.Column(
        "handoff_id",
        Id,
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("agent", sa.String(255), primary_key=True),
    sa.Column("message_id", Id, nullable=False),  # the last transcript line the agent saw
)

mode_changes: Final = sa.Table(
    "mode_changes",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "handoff_id",
        Id,
        sa.ForeignKey("handoffs.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("from_mode", sa.String(16), nullable=False),
    sa.Column("to_mode", sa.String(16), nullable=False),
    sa.Column("who", sa.String(255), nullable=False),
    sa.Column("why", sa.Text(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Index(None, "conversation_id", "id"),
)

agents: Final = sa.Table(
    "agents",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("display_name", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    # Wrong passwords in a row (growing delays, then a lockout an admin lifts; migration 0005).
    sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_failed_at", UtcDateTime(), nullable=True),
    # May export and delete users' data through the agent API (migration 0006).
    sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("name"),
)

agent_tokens: Final = sa.Table(
    "agent_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "agent_id",
        Id,
        sa.ForeignKey("agents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("token_hash", sa.String(64), nullable=False),  # sha256 hex of a random token
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("expires_at", UtcDateTime(), nullable=True),  # NULL: tokens made before 0005
    sa.UniqueConstraint("token_hash"),
    sa.Index(None, "agent_id"),
)

# Console sign-ins, so that logging out (or disabling the agent) ends one on the server: the
# signed cookie names a row here, and a revoked or expired row is no session.
console_sessions: Final = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # random, in the signed cookie
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Index(None, "agent_id"),
)


# Saved replies agents pick in the console or call by name in Slack (`/t 名前`); admins keep them.
canned_replies: Final = sa.Table(
    "canned_replies",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),  # the short keyword
    sa.Column("body", sa.Text(), nullable=False),  # with {{name}}, {{role}}, {{agency}}
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("name"),
)


# Every export and deletion of a user's data: who asked, when, what. After a deletion it is
# the only thing left about the user, and it names them only by a digest of their address.
audit_log: Final = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("who", sa.String(255), nullable=False),  # "user", "cli:<login>", "agent:<name>"
    sa.Column("action", sa.String(32), nullable=False),  # "export", "forget"
    sa.Column("subject", sa.String(255), nullable=False),  # "line:sha256:<16 hex>"
    sa.Column("detail", sa.JSON(), nullable=False),  # counts, never content
    sa.Index(None, "at"),
)


# ---------------------------------------------------------------- booking (migration 0009_booking)

AVAILABILITY_KINDS: Final = ("weekly", "extra", "off")
BOOKING_STATUSES: Final = ("booked", "cancelled", "done")  # done: its time has passed

# When an agent takes consultations: weekly hours (`weekday`, 0 = Monday), and exceptions on
# one `day`: extra hours, or a day (or part of one) off. Times are the agents' local clock
# (BOOKING_ZONE), "HH:MM"; an `off` row without times is the whole day.
availability: Final = sa.Table(
    "availability",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("weekday", sa.Integer(), nullable=True),
    sa.Column("day", sa.Date(), nullable=True),
    sa.Column("start_time", sa.String(5), nullable=True),
    sa.Column("end_time", sa.String(5), nullable=True),
    sa.CheckConstraint("kind IN ('weekly', 'extra', 'off')", name="kind"),
    sa.Index(None, "agent_id"),
)

# How a user wants to be reached, given with their consent to the privacy policy (its version
# and when). One row per conversation: deleted with it (forget, retention purge).
contacts: Final = sa.Table(
    "contacts",
    metadata,
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("consent_at", UtcDateTime(), nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("method IN ('chat', 'phone', 'email')", name="method"),
)

bookings: Final = sa.Table(
    "bookings",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column(
        "conversation_id",
        Id,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("agent_id", Id, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),  # the .ics URL's secret part
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("cancelled_at", UtcDateTime(), nullable=True),
    # Where the booking shows on agent surfaces, e.g. {"slack": {"channel": "C…", "ts": "…"}}.
    sa.Column("refs", sa.JSON(), nullable=False),
    sa.CheckConstraint("status IN ('booked', 'cancelled', 'done')", name="status"),
    sa.UniqueConstraint("token"),
    # One slot, one booking, decided by the database: of two users racing for a slot, the
    # second INSERT fails whichever process runs it.
    sa.Index(
        "uq_bookings_slot",
        "agent_id",
        "starts_at",
        unique=True,
        sqlite_where=sa.text("status = 'booked'"),
        postgresql_where=sa.text("status = 'booked'"),
    ),
    # And one booking per user at a time (a reschedule cancels the old one in the same
    # transaction).
    sa.Index(
        "uq_bookings_open_conversation",
        "conversation_id",
        unique=True,
        sqlite_where=sa.text("status = 'booked'"),
        postgresql_where=sa.text("status = 'booked'"),
    ),
    sa.Index(None, "starts_at"),
)
