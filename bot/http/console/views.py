"""How handoffs and transcript lines look to agents, shared by the console pages, its live
feed and the API. The user's channel address never leaves the server: agents need the
channel, not the LINE or Slack user id."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel

from bot.models import StoredMessage
from bot.records import brief_line, summary_facts
from bot.store import Handoff, ModeChange, Preview

STATUS_LABELS: Final = {
    "waiting": "対応待ち",
    "claimed": "対応中",
    "released": "ボットに戻した",
    "cancelled": "ユーザーが取り消し",
}
CHANNEL_LABELS: Final = {"line": "LINE", "slack": "Slack", "web": "Webチャット", "cli": "端末"}
SENDER_LABELS: Final = {
    "user": "ユーザー",
    "bot": "ボット",
    "agent": "担当者",
    "note": "メモ（ユーザーには見えません）",
    "system": "システム",
}


class HandoffView(BaseModel):
    id: int
    status: Literal["waiting", "claimed", "released", "cancelled"]
    status_label: str
    channel: str
    channel_label: str
    reason: str
    headline: str  # the first answers, e.g. 「経理 ／ 毎日同じことの繰り返し」
    brief: str  # the one line agents read first (the flow's brief), else the headline
    asked: str  # the user's last typed words before the request
    preview: str = ""  # the user's last message (queue rows)
    last_user_at: datetime | None = None
    unread: bool = False  # the user wrote since this agent last opened the request
    requested_at: datetime
    claimed_at: datetime | None
    agent: str | None
    agent_name: str | None
    closed_at: datetime | None
    timeout_notified: bool
    outcome: Literal["booked", "info_only", "declined", "follow_up"] | None = None
    outcome_label: str | None = None


class LineView(BaseModel):
    id: int
    sender: Literal["user", "bot", "agent", "note", "system"]
    sender_label: str
    text: str
    choices: list[str]  # the buttons the bot offered, if any
    agent_name: str | None
    at: datetime


class ModeChangeView(BaseModel):
    from_mode: str
    to_mode: str
    who: str
    why: str
    at: datetime


class AnswerView(BaseModel):
    label: str  # the question's short name (the flow's `label`), else its text
    answer: str


class FactView(BaseModel):
    label: str
    value: str


class HandoffDetail(HandoffView):
    summary: dict[str, Any]
    answers: list[AnswerView]
    facts: list[FactView]
    transcript: list[LineView]
    mode_changes: list[ModeChangeView]


def handoff_view(handoff: Handoff, preview: Preview | None = None) -> HandoffView:
    answers = handoff.summary.get("answers", [])
    headline = " ／ ".join(str(a.get("answer", "")) for a in answers[:2])
    return HandoffView(
        id=handoff.id,
        status=handoff.status.value,
        status_label=STATUS_LABELS[handoff.status.value],
        channel=handoff.key.channel.value,
        channel_label=CHANNEL_LABELS.get(handoff.key.channel.value, handoff.key.channel.value),
        reason=handoff.reason,
        headline=headline,
        brief=brief_line(handoff.summary) or headline,
        asked=str(handoff.summary.get("asked") or ""),
        preview=_clip(preview.last_user_text) if preview else "",
        last_user_at=preview.last_user_at if preview else None,
        unread=preview.unread if preview else False,
        requested_at=handoff.requested_at,
        claimed_at=handoff.claimed_at,
        agent=handoff.agent,
        agent_name=handoff.agent_name,
        closed_at=handoff.closed_at,
        timeout_notified=handoff.timeout_notified_at is not None,
        outcome=handoff.outcome.value if handoff.outcome else None,
        outcome_label=handoff.outcome.label if handoff.outcome else None,
    )


def line_view(line: StoredMessage) -> LineView:
    choices = line.body.get("choices") if line.body.get("type") == "choices" else None
    return LineView(
        id=line.id,
        sender=line.sender,
        sender_label=SENDER_LABELS[line.sender],
        text=line.text,
        choices=[str(c.get("label", "")) for c in choices or []],
        agent_name=line.body.get("agent") if line.sender in ("agent", "note") else None,
        at=line.created_at,
    )


def detail_view(
    handoff: Handoff, transcript: list[StoredMessage], changes: list[ModeChange]
) -> HandoffDetail:
    return HandoffDetail(
        **handoff_view(handoff).model_dump(),
        summary=handoff.summary,
        answers=[
            AnswerView(
                label=str(a.get("label") or a.get("question") or ""),
                answer=str(a.get("answer", "")),
            )
            for a in handoff.summary.get("answers", [])
        ],
        facts=[
            FactView(label=str(f.get("label", "")), value=str(f.get("value", "")))
            for f in summary_facts(handoff.summary)
        ],
        transcript=[line_view(line) for line in transcript],
        mode_changes=[
            ModeChangeView(
                from_mode=c.from_mode.value, to_mode=c.to_mode.value, who=c.who, why=c.why, at=c.at
            )
            for c in changes
        ],
    )


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
