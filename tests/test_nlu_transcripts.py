"""The career flow driven only by typed text (no taps), through the engine and the classifier.

Each step is what the user types and where the conversation must then wait; `slots` and `says`
check what was understood and said. The scripts reach the advice (the summary card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine
from bot.flows.loader import load_flows
from bot.models import CardOut, ChoicesOut, ConversationState, TextIn, Turn, outbound_text
from bot.nlu.classifier import build_understander

ROOT = Path(__file__).resolve().parents[1]
FLOWS = load_flows(ROOT / "flows")
ENGINE = Engine(FLOWS["career"], understand=build_understander(FLOWS.values()))
SUMMARY = "あなたのやりがい相談まとめ"


@dataclass(frozen=True)
class Step:
    text: str
    state: str
    slots: dict[str, Any] = field(default_factory=dict)
    says: tuple[str, ...] = ()
    buttons: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()


def play(steps: list[Step]) -> Turn:
    conversation: ConversationState | None = None
    turn = None
    for number, step in enumerate(steps, 1):
        turn = ENGINE.advance(conversation, TextIn(text=step.text))
        conversation = turn.conversation
        said = "\n".join(outbound_text(m) for m in turn.messages)
        where = f"step {number} {step.text!r} -> {conversation.state}:\n{said}"
        assert conversation.state == step.state, where
        for slot, value in step.slots.items():
            assert conversation.slots.get(slot) == value, f"{where}\nslot {slot}"
        for text in step.says:
            assert text in said, f"{where}\nmissing {text!r}"
        if step.buttons:
            question = next(m for m in reversed(turn.messages) if isinstance(m, ChoicesOut))
            labels = [c.label for c in question.choices]
            assert all(b in labels for b in step.buttons), f"{where}\nbuttons {labels}"
        kinds = tuple(e.kind for e in turn.effects if e.kind != "classified")
        assert kinds == step.effects, f"{where}\neffects {kinds}"
    assert turn is not None
    return turn


def summary_card(turn: Turn) -> CardOut:
    card = next((m for m in turn.messages if isinstance(m, CardOut) and m.title == SUMMARY), None)
    assert card is not None, "no summary card"
    return card


FIT_GOOD = [  # spotlight, support, change, steady, ideas, rules, thanks, pillar
    Step("うーん、微妙", "q_support", {"q_spotlight": "neither"}),
    Step("はい、そうです", "q_change", {"q_support": "yes"}),
    Step("変化はあんまり好きじゃない", "q_steady", {"q_change": "no"}),
    Step("めっちゃ当てはまる", "q_ideas", {"q_steady": "yes"}),
    Step("そうでもないかな", "q_rules", {"q_ideas": "no"}),
    Step("うん、得意なほう", "q_thanks", {"q_rules": "yes"}),
    Step("いいえ", "q_pillar", {"q_thanks": "no"}),
    Step("まさにそれ！", "ask_direction", {"q_pillar": "yes", "fit_result": "good"}),
]


def test_typed_all_the_way_to_the_advice() -> None:
    turn = play(
        [
            Step("こんにちは", "ask_role", says=("まず、いまのお仕事を教えてください",)),
            Step("けいりやってます", "ask_frustrations", {"role": "keiri"}, ("経理なんですね",)),
            # Two frustrations in one message, both by keyword: recorded without a check.
            Step(
                "毎日おなじことばっかでつまんないし、誰もありがとうって言ってくれない",
                "ask_frustrations",
                says=("いま選んでいるのは「毎日同じことの繰り返し」「評価されていない」",),
            ),
            Step("以上です", "fit_start", {"frustrations": ["repetitive", "recognition"]}),
            *FIT_GOOD,
            Step("今の会社でもう少し頑張りたい", "ways", {"direction": "stay"}),
            Step("明日からやってみます", "quals", {"ways_feel": "can"}),
            Step("簿記かなあ", "outlook", {"qual": "boki"}),
            Step("ちょっと安心しました", "summary", {"outlook_feel": "better"}),
        ]
    )
    fields = {f.label: f.value for f in summary_card(turn).fields}
    assert fields["お仕事"] == "経理"
    assert fields["やりがいを感じにくいところ"] == "毎日同じことの繰り返し、評価されていない"
    assert fields["気になる資格"] == "日商簿記"


def test_a_guessed_frustration_is_confirmed_and_the_job_path_reaches_the_advice() -> None:
    turn = play(
        [
            Step("こんにちは", "ask_role"),
            Step("人事部で中途採用を担当してる", "ask_frustrations", {"role": "jinji"}),
            # No keyword: the classifier guesses, and the bot checks before recording it.
            Step(
                "上司が何も言ってくれない",
                "ask_frustrations",
                says=("「評価されていない」ということですね？",),
                buttons=("はい", "いいえ"),
            ),
            Step("はい", "ask_frustrations", says=("いま選んでいるのは「評価されていない」",)),
            Step("スキルが何も増えない", "ask_frustrations", says=("ということですね？",)),
            Step("ちがいます", "ask_frustrations", says=("うまく受け取れませんでした",)),
            Step("これで全部", "fit_start", {"frustrations": ["recognition"]}),
            Step("うん", "q_support"),
            Step("ううん", "q_change"),
            Step("そうだね", "q_steady"),
            Step("全然", "q_ideas"),
            Step("そうかも", "q_rules"),
            Step("ちがうなあ", "q_thanks"),
            Step("はい", "q_pillar"),
            Step("いいえ、違います", "ask_direction", {"fit_result": "low"}),
            Step("仕事やめたい", "job_types", {"direction": "change"}),  # not the stop command
            Step("今の職場でできることも見たい", "ways", {"leaver_next": "both"}),
            Step("忙しくて無理そう", "quals", {"ways_feel": "hard"}),
            Step("今は資格はいいかな", "outlook", {"qual": "none"}),
            Step("まだ不安です", "job_self", {"outlook_feel": "still"}),
            Step("特に思い浮かばない", "job_research", {"self_note": "blank"}),
            Step("まずはまとめが見たいです", "summary", {"job_next": "later"}),
            Step("担当者と話したい", "handoff", effects=("handoff",)),
        ]
    )
    assert turn.messages


def test_unclear_answers_are_asked_again_then_a_person_is_offered() -> None:
    play(
        [
            Step("こんにちは", "ask_role"),
            Step("総務です", "ask_frustrations"),
            Step("成長してる実感がない", "ask_frustrations"),
            Step("これで全部", "fit_start", {"frustrations": ["growth"]}),
            Step("今日は天気がいいね", "fit_start", says=("うまく受け取れませんでした",)),
            Step(
                "ｗｗｗ",
                "fit_start",
                says=("担当者と直接話すこともできますよ",),
                buttons=("当てはまる", "担当者と話したい"),
            ),
            Step("人と話したい", "handoff", effects=("handoff",)),
        ]
    )


@pytest.mark.parametrize("text", ["やめる", "もうやめます"])
def test_stop_typed_mid_flow_ends_the_conversation(text: str) -> None:
    play(
        [
            Step("こんにちは", "ask_role"),
            Step(
                text,
                "goodbye",
                says=("今日は話してくれてありがとうございました",),
                effects=("ended",),
            ),
        ]
    )
