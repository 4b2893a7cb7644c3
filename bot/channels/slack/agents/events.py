"""Slack request bodies from agents, in, as our own frozen types: a click on a card's button,
or a message in the agent channel's threads. Nothing past this module sees the raw payload.

Whether a message's thread is a handoff's (its card) is a question for the store, asked by
`bot.channels.slack.agents.actions`; here a message only qualifies by where it was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from bot.channels.edge import event_time
from bot.channels.slack.agents.blocks import CLAIM_ACTION, RELEASE_ACTION
from bot.models import Frozen
from bot.records import HandoffOutcome

SURFACE: Final = "slack-agents"
"""Marks recorded agent requests in the inbox (they share the Slack channel's handler)."""
ADDRESS_PREFIX: Final = "agents:"
"""Agent requests are queued per card: `agents:<channel>:<card ts>`; no conversation has
such an address, so they never mix with a user's turns."""

Action = Literal["claim", "release"]

_ACTIONS: Final[dict[str, Action]] = {CLAIM_ACTION: "claim", RELEASE_ACTION: "release"}
_LINK: Final = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
# A message's own subtypes an agent's reply may carry ("also send to #channel").
_REPLY_SUBTYPES: Final = frozenset({None, "thread_broadcast"})


class AgentClick(Frozen):
    """A click on a card's button (from any channel: the handler checks where)."""

    kind: Literal["click"] = "click"
    action: Action
    handoff_id: int
    channel: str
    card_ts: str
    outcome: HandoffOutcome | None = None  # a release says how the request ended


class AgentPost(Frozen):
    """A message in a thread of the agent channel. `text` is as the agent wrote it, unclipped."""

    kind: Literal["post"] = "post"
    channel: str
    thread_ts: str
    ts: str
    text: str
    handoff_id: int | None = None  # filled in once the thread is known to be a card's


class AgentRequest(Frozen):
    """One thing a person did in the agent channel, recorded in the inbox before it is acted on."""

    surface: Literal["slack-agents"] = SURFACE
    event_id: str  # unique per action, whatever Slack resends
    address: str
    occurred_at: datetime
    user: str
    act: Annotated[AgentClick | AgentPost, Field(discriminator="kind")]


def parse_agent(
    body: Mapping[str, Any], *, agent_channel: str, bot_user_id: str | None
) -> AgentRequest | None:
    """The agent action in a verified Slack request body, or None if it is not one."""
    try:
        if body.get("type") == "block_actions":
            return _click(body)
        if body.get("type") == "event_callback":
            event = body.get("event")
            if isinstance(event, Mapping) and event.get("channel") == agent_channel:
                return _post(event, bot_user_id)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a shape we do not know is not ours to act on
    return None


def address(channel: str, card_ts: str) -> str:
    return f"{ADDRESS_PREFIX}{channel}:{card_ts}"


def agent_text(text: str, *, bot_user_id: str | None) -> str:
    """Slack's markup as the words to send on: our mention dropped, a link as its label and
    address (the user cannot click a Slack label), entities unescaped. Unlike a user's
    message, lines are kept: an agent writes paragraphs."""

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if bot_user_id and target == f"@{bot_user_id}":
            return ""
        linked = target.startswith(("http://", "https://"))
        # Slack links a typed address as <http://example.jp|example.jp>: that label is enough.
        if label and linked and label not in (target, target.split("://", 1)[1]):
            return f"{label} ({target})"
        return label or target

    words = _LINK.sub(link, text)
    words = words.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return "\n".join(line.rstrip() for line in words.strip().splitlines())


# ---------------------------------------------------------------- private


def _click(body: Mapping[str, Any]) -> AgentRequest | None:
    actions = body.get("actions") or []
    if len(actions) != 1:
        return None
    action = actions[0]
    action_id = str(action.get("action_id", ""))
    # A release button names its outcome: `yarigai.agent.release.<outcome>` (a card posted
    # before outcomes existed has the bare release id, which hands back without one).
    outcome: HandoffOutcome | None = None
    if action_id.startswith(f"{RELEASE_ACTION}."):
        action_id, _, named = action_id.rpartition(".")
        outcome = HandoffOutcome(named)  # ValueError: not one of ours
    kind = _ACTIONS.get(action_id)
    if kind is None:
        return None
    value = str(action.get("value", ""))
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None  # not a handoff id of ours (they fit a signed 64-bit integer)
    handoff_id = int(value)
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = str(container.get("channel_id") or body["channel"]["id"])
    card_ts = str(container.get("message_ts") or message["ts"])
    user = str(body["user"]["id"])
    return AgentRequest(
        event_id=f"agent-click:{user}:{action['action_ts']}",
        address=address(channel, card_ts),
        occurred_at=_time(action["action_ts"]),
        user=user,
        act=AgentClick(
            action=kind,
            handoff_id=handoff_id,
            channel=channel,
            card_ts=card_ts,
            outcome=outcome,
        ),
    )


def _post(event: Mapping[str, Any], bot_user_id: str | None) -> AgentRequest | None:
    if event.get("type") not in ("message", "app_mention"):
        return None
    if event.get("bot_id") or event.get("subtype") not in _REPLY_SUBTYPES or event.get("hidden"):
        return None  # bots (ours: the thread lines), edits, deletions, joins, file shares
    user, channel, ts = str(event["user"]), str(event["channel"]), str(event["ts"])
    thread_ts = event.get("thread_ts")
    if user == bot_user_id or not thread_ts or thread_ts == ts:
        return None  # the channel's top level is the agents' own chatter
    text = agent_text(str(event.get("text", "")), bot_user_id=bot_user_id)
    if not text:
        return None
    return AgentRequest(
        # The message's (channel, ts): a reply that mentions the bot arrives twice, as
        # `message` and `app_mention`; both are one request.
        event_id=f"{channel}:{ts}",
        address=address(channel, str(thread_ts)),
        occurred_at=_time(ts),
        user=user,
        act=AgentPost(channel=channel, thread_ts=str(thread_ts), ts=ts, text=text),
    )


def _time(ts: str) -> datetime:
    """Slack's `ts`; a ValueError (the request is then not ours) unless a plausible time."""
    moment = event_time(float(ts))
    if moment is None:
        raise ValueError(f"implausible Slack ts {ts[:32]!r}")
    return moment
