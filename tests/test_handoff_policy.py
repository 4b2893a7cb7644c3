"""The handoff policy as pure functions: what users are told, when, and what agents read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.flows.loader import load_flow
from bot.handoff.desk import (
    BACK_TO_BOT,
    is_back_to_bot,
    repair_action,
    timeout_due,
    waiting_text,
)
from bot.handoff.hours import AgentHours
from bot.handoff.summary import summarize
from bot.models import (
    Channel,
    ChoiceIn,
    ConversationKey,
    Mode,
    ResumeIn,
    StartIn,
    StoredMessage,
    TextIn,
    outbound_text,
)
from bot.records import brief_line, summary_lines
from bot.store import HandoffStatus, Orphan

ROOT = Path(__file__).resolve().parents[1]
HOURS = AgentHours.parse("Mon-Fri 09:00-18:00 Asia/Tokyo")
TUESDAY_10 = datetime(2025, 4, 1, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
SATURDAY_12 = datetime(2025, 4, 5, 3, 0, tzinfo=UTC)
FIFTEEN = timedelta(minutes=15)


@pytest.mark.parametrize(
    ("event", "back"),
    [
        (TextIn(text="ボットに戻る"), True),
        (TextIn(text="ボットにもどる！"), True),
        (TextIn(text="キャンセル"), True),
        (ChoiceIn(choice=BACK_TO_BOT, state="handoff"), True),
        (TextIn(text="ボットに戻るかは後で決めます"), False),  # a sentence, not the command
        (TextIn(text="よろしくお願いします"), False),
        (ChoiceIn(choice="helpful"), False),
        (StartIn(), False),
        (ResumeIn(), False),
    ],
)
def test_what_takes_a_waiting_user_back_to_the_bot(event: TextIn | ChoiceIn, back: bool) -> None:
    assert is_back_to_bot(event) is back


def test_waiting_text_inside_and_outside_agent_hours() -> None:
    inside = waiting_text(HOURS, FIFTEEN, TUESDAY_10)
    assert "ふだんは15分ほどで" in inside and "時間外" not in inside
    assert "1時間30分ほど" in waiting_text(HOURS, timedelta(minutes=90), TUESDAY_10)
    outside = waiting_text(HOURS, FIFTEEN, SATURDAY_12)
    assert "対応時間外です（対応時間: 月〜金 9:00〜18:00）" in outside
    assert "4月7日（月）9:00から" in outside


def test_timeout_counts_from_when_agents_are_back() -> None:
    assert timeout_due(TUESDAY_10, HOURS, FIFTEEN) == TUESDAY_10 + FIFTEEN
    monday_9 = datetime(2025, 4, 7, 0, 0, tzinfo=UTC)
    assert timeout_due(SATURDAY_12, HOURS, FIFTEEN) == monday_9 + FIFTEEN


@pytest.mark.parametrize(
    ("mode", "last", "closed_at", "action"),
    [
        (Mode.AGENT, HandoffStatus.RELEASED, TUESDAY_10, "resume"),
        (Mode.WAITING, None, None, "open"),
        (Mode.WAITING, HandoffStatus.CANCELLED, TUESDAY_10, "resume"),  # cancel, resume lost
        (Mode.WAITING, HandoffStatus.CANCELLED, TUESDAY_10 - FIFTEEN, "open"),  # a new request
        (Mode.WAITING, HandoffStatus.RELEASED, TUESDAY_10 - FIFTEEN, "open"),
    ],
)
def test_repair_action(
    mode: Mode, last: HandoffStatus | None, closed_at: datetime | None, action: str
) -> None:
    orphan = Orphan(
        conversation_id=1,
        key=ConversationKey(channel=Channel.WEB, address="x" * 20),
        mode=mode,
        updated_at=TUESDAY_10,
        last_status=last,
        last_closed_at=closed_at,
    )
    assert repair_action(orphan) == action


def test_summary_of_a_career_conversation_has_answers_with_labels_and_the_outcome() -> None:
    engine = Engine(load_flow(ROOT / "flows" / "career.yaml"))
    turn = engine.advance(None, StartIn())
    lines = []
    said = ["経理", "毎日同じことの繰り返し", "これで全部"]
    for text in said:
        turn = engine.advance(turn.conversation, TextIn(text=text))
        lines.append(
            StoredMessage(
                id=len(lines) + 1,
                direction="in",
                sender="user",
                text=text,
                body={},
                created_at=TUESDAY_10,
            )
        )
        for m in turn.messages:
            lines.append(
                StoredMessage(
                    id=len(lines) + 1,
                    direction="out",
                    sender="bot",
                    text=outbound_text(m),
                    body=m.model_dump(mode="json"),
                    created_at=TUESDAY_10,
                )
            )
    lines.append(
        StoredMessage(
            id=99, direction="out", sender="note", text="内部メモ", body={}, created_at=TUESDAY_10
        )
    )

    summary = summarize(engine.spec, turn.conversation, lines, reason="相談希望")

    answers = {a["slot"]: a["answer"] for a in summary["answers"]}
    assert answers == {"role": "経理", "frustrations": "毎日同じことの繰り返し"}
    assert summary["answers"][0]["question"] == "まず、いまのお仕事を教えてください。"
    assert summary["reason"] == "相談希望" and summary["flow"] == "career"
    assert summary["asked"] == ""  # 「これで全部」 is an answer, not their own words
    assert all(line["sender"] != "note" for line in summary["recent"])
    assert len(summary["recent"]) <= 12
    text = "\n".join(summary_lines(summary))
    assert "理由: 相談希望" in text and "・職種: 経理" in text


def test_the_brief_speaks_the_flows_words_never_slot_keys() -> None:
    engine = Engine(load_flow(ROOT / "flows" / "career.yaml"))
    turn = engine.advance(None, StartIn())
    lines = []
    answers = ["経理で3年目", "毎日同じことの繰り返し", "これで全部"]
    answers += ["いいえ", "はい", "いいえ", "はい", "いいえ", "はい", "いいえ", "はい"]
    answers += ["今の職場で工夫したい", "面接が不安なので相談したいです", "担当者と話したい"]
    for text in answers:
        turn = engine.advance(turn.conversation, TextIn(text=text))
        lines.append(
            StoredMessage(
                id=len(lines) + 1,
                direction="in",
                sender="user",
                text=text,
                body=TextIn(text=text).model_dump(mode="json"),
                created_at=TUESDAY_10,
            )
        )
    assert "fit_minus" in turn.conversation.slots and "m_improve" in turn.conversation.slots

    summary = summarize(engine.spec, turn.conversation, lines, reason="相談希望")

    assert summary["brief"] == [
        "経理（3年目）",
        "毎日同じことの繰り返し",
        "相性: かなり良い",
        "今の職場で工夫したい",
    ]
    assert brief_line(summary).startswith("経理（3年目） ／ 毎日同じこと")
    # What they asked: their own words, not the request for a person that ends them.
    assert summary["asked"] == "面接が不安なので相談したいです"
    labels = [a["label"] for a in summary["answers"]]
    assert labels[:4] == ["職種", "モヤモヤ", "目立ちたい", "裏方で支えたい"]
    facts = {f["label"]: f["value"] for f in summary["facts"]}
    assert facts["相性の内訳"] == "向いている特徴 4/4・合わないかもしれない特徴 0/4"
    assert facts["話の進め方"] == "今の職場の工夫から"
    text = "\n".join(summary_lines(summary))
    for key in ("fit_minus", "fit_plus", "m_improve", "lean", "progress", "q_spotlight"):
        assert key not in text
