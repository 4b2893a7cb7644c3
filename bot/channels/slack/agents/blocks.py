"""The Slack agent channel's messages as Block Kit: the handoff card and the lines of its thread.

Pure: a handoff (or a line) in, a `SlackMessage` out. The card always shows the handoff as it
is now, so re-rendering it after any move, in any order, gives the right card. Its buttons'
`action_id`s start with `ACTION_PREFIX` and their `value` is the handoff id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from bot.channels.slack.blocks import MAX_BLOCKS, MAX_SECTION_TEXT, SlackMessage
from bot.core.ports import AgentRef
from bot.models import StoredMessage
from bot.records import Booking, Handoff, HandoffOutcome, HandoffStatus, brief_line, summary_lines

ACTION_PREFIX: Final = "yarigai.agent."
"""Agent buttons' `action_id`s start with this (not with the user buttons' prefix)."""
CLAIM_ACTION: Final = f"{ACTION_PREFIX}claim"
RELEASE_ACTION: Final = f"{ACTION_PREFIX}release"
CLAIM_LABEL: Final = "対応する"
RELEASE_LABEL: Final = "Botに戻す"
"""The release buttons read 「Botに戻す: <outcome>」 (see `release_label`)."""
NOTE_MARK: Final = "//"
"""A thread reply starting with this is an internal note, never sent to the user."""
CANNED_MARKS: Final = ("!", "！")
"""A thread reply `!keyword` sends the saved reply of that keyword to the user (filled in).
Not `/`: Slack takes a message starting with `/` for a slash command and never posts it."""
SLACK_AGENT_PREFIX: Final = "slack:"
"""`AgentRef.id` of a Slack agent: this, then the Slack user id."""

CHANNEL_LABELS: Final = {"line": "LINE", "slack": "Slack", "web": "Webチャット", "cli": "端末"}
VIA_LABELS: Final = {"console": "コンソール", "api": "API", "slack": "Slack"}
MAX_SUMMARY_SECTIONS: Final = 4
"""The rest of a very long summary is a click away (the transcript link, or the console)."""
MAX_CONTEXT_TEXT: Final = 2000
MAX_FALLBACK_TEXT: Final = 4000

Block = dict[str, Any]


def card(handoff: Handoff, *, link: str | None = None) -> SlackMessage:
    """The handoff's card: who asked, the bot's summary, a transcript link, status and button."""
    channel = channel_label(handoff)
    title = f"担当者への相談 #{handoff.id}"
    blocks: list[Block] = [
        {"type": "header", "text": _plain(title)},
        _mrkdwn(
            f"*{channel}* のユーザー ・ 依頼 {_date(handoff)}\n*理由:* {_escape(handoff.reason)}"
        ),
    ]
    # The same brief the console opens with: who they are, what weighs on them, what they said.
    brief = brief_line(handoff.summary)
    asked = str(handoff.summary.get("asked") or "")
    if brief or asked:
        said = f"\n> {_escape(asked)}" if asked else ""
        blocks.append(_mrkdwn(f"*{_escape(brief)}*{said}" if brief else said.lstrip("\n")))
    lines = [_escape(line) for line in summary_lines(handoff.summary)[1:]]  # reason: above
    blocks += [_mrkdwn(part) for part in _sections(lines)][:MAX_SUMMARY_SECTIONS]
    if link:
        blocks.append(_context(f"<{link}|会話の全文をコンソールで見る>", mrkdwn=True))
    blocks.append(_mrkdwn(status_line(handoff)))
    buttons = _buttons(handoff)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    text = f"{title}（{channel}）: {_plain_status(handoff)}"
    return SlackMessage(text=_clip(text, MAX_FALLBACK_TEXT), blocks=tuple(blocks[:MAX_BLOCKS]))


def recent(handoff: Handoff) -> SlackMessage | None:
    """The end of the conversation before the request, as the thread's first line."""
    said = handoff.summary.get("recent") or []
    labels = {"user": "ユーザー", "bot": "ボット", "agent": "担当者", "system": "システム"}
    lines = [
        f"*{labels.get(str(line.get('sender')), str(line.get('sender')))}:* "
        f"{_escape(str(line.get('text', '')))}"
        for line in said
    ]
    if not lines:
        return None
    sections = _sections(["*これまでのやりとり（直近）*", *lines])
    blocks = [_mrkdwn(part) for part in sections][:MAX_SUMMARY_SECTIONS]
    return SlackMessage(text="これまでのやりとり（直近）", blocks=tuple(blocks))


def user_said(handoff: Handoff, text: str) -> SlackMessage:
    label = f"👤 ユーザー（{channel_label(handoff)}）"
    return _line(label, text)


def agent_said(message: StoredMessage, agent: AgentRef) -> SlackMessage:
    """An agent's reply or note made elsewhere (the console, the API), mirrored in the thread."""
    via = VIA_LABELS.get(agent.via, agent.via)
    where = f"・{via}" if via else ""
    if message.sender == "note":
        label = f"📝 メモ（{agent.name}{where}）ユーザーには見えません"
    else:
        label = f"💬 {agent.name}{where} → ユーザー"
    return _line(label, message.text)


def claimed_note(handoff: Handoff) -> SlackMessage:
    text = (
        f"{holder(handoff)}さんが対応を始めました。このスレッドへの返信はユーザーに届きます"
        f"（`{NOTE_MARK}` で始めるとメモになり、ユーザーには届きません。"
        f"`{CANNED_MARKS[0]}名前` で定型文を送れます）。"
    )
    return _note(text, fallback=f"{holder_plain(handoff)}さんが対応を始めました")


def released_note(handoff: Handoff) -> SlackMessage:
    how = f"（結果: {handoff.outcome.label}）" if handoff.outcome else ""
    text = f"{holder(handoff)}さんがボットに戻しました{how}。ボットが会話を再開しています。"
    return _note(text, fallback=f"{holder_plain(handoff)}さんがボットに戻しました")


def cancelled_note(handoff: Handoff) -> SlackMessage:
    text = "ユーザーが依頼を取り消して、ボットとの会話に戻りました。"
    return _note(text, fallback=text)


def release_label(outcome: HandoffOutcome) -> str:
    """The button that hands back with this outcome."""
    return f"{RELEASE_LABEL}: {outcome.label}"


def status_line(handoff: Handoff) -> str:
    """The card's status, in mrkdwn."""
    if handoff.status is HandoffStatus.CLAIMED:
        return f"*対応中:* {holder(handoff)}"
    if handoff.status is HandoffStatus.RELEASED:
        how = f"（{handoff.outcome.label}）" if handoff.outcome else ""
        return f"*対応終了{how}:* {holder(handoff)}さんがボットに戻しました"
    if handoff.status is HandoffStatus.CANCELLED:
        return "*取り消し:* ユーザーがボットに戻りました"
    return "*受付待ち:* 対応する担当者を待っています"


def holder(handoff: Handoff) -> str:
    """Who holds (or held) the handoff, in mrkdwn: a Slack agent as a mention."""
    return mention(handoff.agent or "", handoff.agent_name or "")


def mention(agent: str, name: str) -> str:
    """An agent in mrkdwn: a Slack agent as a mention, others by name."""
    user = slack_user(agent)
    return f"<@{user}>" if user is not None else _escape(name or agent)


def holder_plain(handoff: Handoff) -> str:
    return handoff.agent_name or handoff.agent or ""


def slack_user(agent: str | None) -> str | None:
    """The Slack user id of a Slack agent's `AgentRef.id`, else None."""
    if agent and agent.startswith(SLACK_AGENT_PREFIX):
        return agent.removeprefix(SLACK_AGENT_PREFIX)
    return None


def channel_label(handoff: Handoff) -> str:
    channel = handoff.key.channel.value
    return CHANNEL_LABELS.get(channel, channel)


# ---------------------------------------------------------------- private


def _buttons(handoff: Handoff) -> list[Block]:
    if handoff.status is HandoffStatus.WAITING:
        return [
            {
                "type": "button",
                "text": _plain(CLAIM_LABEL),
                "action_id": CLAIM_ACTION,
                "value": str(handoff.id),
                "style": "primary",
            }
        ]
    # Only a Slack agent can hand back from here; a console agent does it in the console.
    # Handing back says how it ended: one button per outcome (a Slack menu would also do, but
    # buttons are one click and their confirm names the outcome).
    if handoff.status is HandoffStatus.CLAIMED and slack_user(handoff.agent) is not None:
        return [
            {
                "type": "button",
                "text": _plain(release_label(outcome)),
                "action_id": f"{RELEASE_ACTION}.{outcome.value}",
                "value": str(handoff.id),
                "confirm": {
                    "title": _plain("ボットに戻しますか？"),
                    "text": _plain(
                        f"結果「{outcome.label}」を記録し、ボットが会話を再開してユーザーにそう伝えます。"
                    ),
                    "confirm": _plain("戻す"),
                    "deny": _plain("やめる"),
                },
            }
            for outcome in HandoffOutcome
        ]
    return []


def _plain_status(handoff: Handoff) -> str:
    return {
        HandoffStatus.WAITING: "受付待ち",
        HandoffStatus.CLAIMED: f"対応中（{holder_plain(handoff)}）",
        HandoffStatus.RELEASED: "対応終了",
        HandoffStatus.CANCELLED: "取り消し",
    }[handoff.status]


def _date(handoff: Handoff) -> str:
    """Slack shows it in each reader's time zone; the fallback is UTC."""
    at = handoff.requested_at
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def _line(label: str, text: str) -> SlackMessage:
    blocks = [_context(label), *({"type": "section", "text": _plain(p)} for p in _cut(text))]
    return SlackMessage(text=_clip(f"{label}\n{text}", MAX_FALLBACK_TEXT), blocks=tuple(blocks))


def _note(mrkdwn: str, *, fallback: str) -> SlackMessage:
    return SlackMessage(text=fallback, blocks=(_context(mrkdwn, mrkdwn=True),))


def _sections(lines: Sequence[str]) -> list[str]:
    """`lines` joined into as few section texts as Slack's limit allows."""
    parts: list[str] = []
    current = ""
    for line in lines:
        line = _clip(line, MAX_SECTION_TEXT)
        if current and len(current) + 1 + len(line) > MAX_SECTION_TEXT:
            parts.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        parts.append(current)
    return parts


def _cut(text: str) -> Iterator[str]:
    text = text.strip() or "（空のメッセージ）"
    for start in range(0, len(text), MAX_SECTION_TEXT):
        yield text[start : start + MAX_SECTION_TEXT]


def _mrkdwn(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_TEXT)}}


def _context(text: str, *, mrkdwn: bool = False) -> Block:
    element = {"type": "mrkdwn", "text": text} if mrkdwn else _plain(text)
    element["text"] = _clip(element["text"], MAX_CONTEXT_TEXT)
    return {"type": "context", "elements": [element]}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack's mrkdwn gives &, < and > meaning; these three must be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------- bookings


def booking_card(booking: Booking, *, when: str, link: str | None = None) -> SlackMessage:
    """A booked consultation as agents see it; re-rendered when it moves or is cancelled."""
    channel = CHANNEL_LABELS.get(booking.key.channel.value, booking.key.channel.value)
    cancelled = booking.status == "cancelled"
    title = f"面談の予約 #{booking.id}"
    shown_when = f"~{_escape(when)}~" if cancelled else f"*{_escape(when)}*"
    blocks: list[Block] = [
        {"type": "header", "text": _plain(title)},
        _mrkdwn(
            f"{shown_when}\n*担当:* {_escape(booking.agent_name)} ・ *{channel}* のユーザー"
            f"\n*お名前:* {_escape(booking.contact_name or '（未登録）')}"
            f"\n*連絡先:* {_escape(booking.contact or '（未登録）')}"
        ),
        _mrkdwn("キャンセルされました" if cancelled else "予約済み"),
    ]
    if link:
        blocks.append(_context(f"<{link}|予約の一覧をコンソールで見る>", mrkdwn=True))
    state = "キャンセル" if cancelled else "予約済み"
    text = f"{title}: {when}（{booking.agent_name}）{state}"
    return SlackMessage(text=_clip(text, MAX_FALLBACK_TEXT), blocks=tuple(blocks))
