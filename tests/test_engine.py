"""The pure engine, as table tests over tests/flows/mini.yaml: events in, a turn out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.engine import DONE, MAX_BUBBLES, Engine
from bot.flows.loader import load_flow, parse_flow
from bot.flows.schema import ChoiceSpec, CommandSpec, FaqSpec
from bot.models import (
    CardOut,
    ChoiceIn,
    ChoicesOut,
    ConversationState,
    HandoffRequested,
    ResumeIn,
    StartIn,
    Status,
    TextIn,
    TextOut,
    Turn,
    outbound_text,
)
from bot.nlu.understanding import YES, Understanding

MINI = Path(__file__).parent / "flows" / "mini.yaml"
ENGINE = Engine(load_flow(MINI))
TEXTS = ENGINE.spec.texts

GREETING = "こんにちは、テスト社です"
ROLE_Q = "お仕事は？"
PAINS_Q = "悩みは？"
BYE = "またね"
SUMMARY_BORING = "まとめ\n■ 職種\n経理\n■ 悩み\n単調"
NEED_SELECTION = "ひとつ以上選んでから「これで全部」を押してください。"

Event = TextIn | ChoiceIn | StartIn | ResumeIn


def tap(choice: str, state: str | None = None) -> ChoiceIn:
    return ChoiceIn(choice=choice, state=state)


def say(text: str) -> TextIn:
    return TextIn(text=text)


def answers(conv: ConversationState) -> dict[str, Any]:
    """The slots without the engine's own bookkeeping (underscored)."""
    return {k: v for k, v in conv.slots.items() if not k.startswith("_")}


def play(*events: Event, engine: Engine = ENGINE, conv: ConversationState | None = None) -> Turn:
    """The last turn after feeding `events` one by one, each to the state the previous left."""
    turn = None
    for event in events:
        turn = engine.advance(conv, event)
        conv = turn.conversation
    assert turn is not None
    return turn


def said(turn: Turn) -> list[str]:
    return [outbound_text(m) for m in turn.messages]


def buttons(turn: Turn) -> list[str]:
    question = turn.messages[-1]
    assert isinstance(question, ChoicesOut)
    return [c.id for c in question.choices]


def effects(turn: Turn) -> tuple[str, ...]:
    return tuple(e.kind for e in turn.effects)


START = (StartIn(),)
AT_PAINS = (*START, tap("keiri", "role"))
ENDED = (*AT_PAINS, tap("boring", "pains"), tap(DONE, "pains"))


@dataclass(frozen=True)
class Case:
    events: tuple[Event, ...]
    state: str
    said: list[str]
    slots: dict[str, Any] | None = None
    effects: tuple[str, ...] = ()
    buttons: list[str] | None = None
    status: Status = Status.ACTIVE
    extra: dict[str, Any] = field(default_factory=dict)


CASES = {
    "start greets and asks": Case(
        START, "role", [GREETING, ROLE_Q], slots={}, buttons=["keiri", "jinji"]
    ),
    "a tap answers and moves on": Case(
        AT_PAINS,
        "pains",
        [PAINS_Q],
        slots={"role": "keiri"},
        buttons=["boring", "thanks", DONE],
    ),
    "free text is mapped by keywords": Case(
        (*START, say("会計の仕事をしています")),
        "pains",
        [PAINS_Q],
        slots={"role": "keiri"},
        effects=("classified",),
    ),
    "a multi-select pick says what is picked so far": Case(
        (*AT_PAINS, tap("boring", "pains")),
        "pains",
        [
            "いま選んでいるのは「単調」です。ほかにもあれば選んで、"
            "終わったら「これで全部」を押してください。"
        ],
        slots={"role": "keiri"},
        buttons=["boring", "thanks", DONE],
        extra={"selection": ("boring",)},
    ),
    "multi-select picks then done": Case(
        (*AT_PAINS, tap("boring", "pains"), say("評価されない"), tap(DONE, "pains")),
        "bye",
        ["経理なら自動化がおすすめ", SUMMARY_BORING + "、評価", BYE],
        slots={"role": "keiri", "pains": ["boring", "thanks"]},
        effects=("ended",),
        status=Status.ENDED,
    ),
    "done typed as text": Case(
        (*AT_PAINS, tap("thanks", "pains"), say("以上")),
        "bye",
        ["まとめ\n■ 職種\n経理\n■ 悩み\n評価", BYE],
        slots={"role": "keiri", "pains": ["thanks"]},
        effects=("classified", "ended"),
        status=Status.ENDED,
    ),
    "done with nothing picked asks for a pick": Case(
        (*AT_PAINS, tap(DONE, "pains")),
        "pains",
        [NEED_SELECTION, PAINS_Q],
        slots={"role": "keiri"},
    ),
    "a stale button is answered and does not move": Case(
        (*AT_PAINS, tap("jinji", "role")),
        "pains",
        [TEXTS.stale_button, PAINS_Q],
        slots={"role": "keiri"},
    ),
    "an unknown button id is treated as stale": Case(
        (*START, tap("nope", "role")), "role", [TEXTS.stale_button, ROLE_Q]
    ),
    "unrecognised text re-asks": Case(
        (*START, say("うーん")),
        "role",
        [TEXTS.not_understood, ROLE_Q],
        effects=("classified",),
        buttons=["keiri", "jinji"],
        extra={"misses": 1},
    ),
    "after max_misses misses the agent button is offered": Case(
        (*START, say("うーん"), say("えーと")),
        "role",
        [TEXTS.still_not_understood, ROLE_Q],
        effects=("classified",),
        buttons=["keiri", "jinji", "agent"],
        extra={"misses": 2},
    ),
    "a help command re-asks": Case(
        (*START, say("ヘルプ")), "role", ["ボタンで答えてね", ROLE_Q], effects=("classified",)
    ),
    "a help button re-asks": Case((*START, tap("help")), "role", ["ボタンで答えてね", ROLE_Q]),
    "restart resets the slots": Case(
        (*AT_PAINS, say("やり直し")),
        "role",
        [GREETING, ROLE_Q],
        slots={},
        effects=("classified",),
    ),
    "the agent command hands off": Case(
        (*START, say("担当者")),
        "handoff",
        ["担当者を呼びます"],
        effects=("classified", "handoff"),
    ),
    "resume goes to the flow's resume state": Case(
        (*START, tap("agent"), ResumeIn()),
        "bye",
        ["おかえりなさい", BYE],
        effects=("ended",),
        status=Status.ENDED,
    ),
    "a conditional branch taken": Case(
        ENDED,
        "bye",
        ["経理なら自動化がおすすめ", SUMMARY_BORING, BYE],
        slots={"role": "keiri", "pains": ["boring"]},
        effects=("ended",),
        status=Status.ENDED,
    ),
    "a conditional branch not taken": Case(
        (*AT_PAINS, tap("thanks", "pains"), tap(DONE, "pains")),
        "bye",
        ["まとめ\n■ 職種\n経理\n■ 悩み\n評価", BYE],
        effects=("ended",),
        status=Status.ENDED,
    ),
    "after the end any text starts again": Case(
        (*ENDED, say("また相談したいです")), "role", [GREETING, ROLE_Q], slots={}
    ),
    "after the end an old button starts again": Case(
        (*ENDED, tap("keiri", "role")), "role", [GREETING, ROLE_Q], slots={}
    ),
    "start on a going conversation starts over": Case(
        (*AT_PAINS, StartIn()), "role", [GREETING, ROLE_Q], slots={}
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_engine_table(case: Case) -> None:
    turn = play(*case.events)
    conv = turn.conversation
    assert conv.state == case.state
    assert said(turn) == case.said
    assert effects(turn) == case.effects
    assert conv.status is case.status
    if case.slots is not None:
        assert {k: v for k, v in conv.slots.items() if not k.startswith("_")} == case.slots
    if case.buttons is not None:
        assert buttons(turn) == case.buttons
    for name, value in case.extra.items():
        assert getattr(conv, name) == value


def test_a_multi_select_marks_the_picked_buttons() -> None:
    question = play(*AT_PAINS, tap("thanks", "pains")).messages[-1]
    assert isinstance(question, ChoicesOut)
    assert question.multi
    assert [c.id for c in question.choices if c.selected] == ["thanks"]


def test_the_handoff_effect_carries_its_reason() -> None:
    assert play(*START, say("担当者")).effects[-1] == HandoffRequested(reason="相談希望")


def test_a_vanished_state_moves_to_the_fallback_with_the_flow_changed_text() -> None:
    gone = ConversationState(flow="mini", flow_version="old", state="gone", slots={"role": "keiri"})
    turn = ENGINE.advance(gone, say("経理"))
    assert said(turn) == [TEXTS.flow_changed, GREETING, ROLE_Q]
    assert turn.conversation.state == "role"  # mini has no fallback state: its start
    assert turn.conversation.flow_version == ENGINE.flow.version


def test_a_vanished_state_goes_to_the_state_marked_fallback() -> None:
    flow = parse_flow(
        "flow: f\nstart: a\nstates:\n"
        "  a:\n    say: [はじめまして]\n    next: b\n"
        "  b:\n    say: [続けましょう]\n    fallback: true\n    end: true\n"
    )
    turn = Engine(flow).advance(
        ConversationState(flow="f", flow_version="x", state="gone"), StartIn()
    )
    assert said(turn) == [TEXTS.flow_changed, "続けましょう"]


def test_a_card_hides_an_empty_field() -> None:
    # No role: as if the conversation came in at `pains` without having answered `role`.
    conv = ConversationState(flow="mini", flow_version="x", state="pains", selection=("thanks",))
    turn = ENGINE.advance(conv, tap(DONE, "pains"))
    card = turn.messages[0]
    assert isinstance(card, CardOut)
    assert [(f.label, f.value) for f in card.fields] == [("悩み", "評価")]


def test_a_conditional_message() -> None:
    flow = parse_flow(
        """\
flow: cond
start: q
states:
  q:
    ask:
      text: 残業は多い？
      slot: overtime
      choices: [{id: many, label: 多い}, {id: few, label: 少ない}]
    next: tell
  tell:
    say:
      - {text: 無理しないでくださいね, if: "overtime == 'many'"}
      - "{{ label.overtime }}なんですね"
    end: true
"""
    )
    engine = Engine(flow)
    assert said(play(StartIn(), tap("many", "q"), engine=engine)) == [
        "無理しないでくださいね",
        "多いなんですね",
    ]
    assert said(play(StartIn(), tap("few", "q"), engine=engine)) == ["少ないなんですね"]


def test_a_turn_has_at_most_three_bubbles() -> None:
    says = "".join(f"      - 文{i}\n" for i in range(1, 9))
    flow = parse_flow(
        "flow: chatty\nstart: a\nstates:\n  a:\n    say:\n"
        + says
        + "      - card: {title: カード}\n"
        + "    end: true\n"
    )
    turn = Engine(flow).advance(None, StartIn())
    assert len(turn.messages) == MAX_BUBBLES
    assert isinstance(turn.messages[-1], CardOut)  # non-text messages are never merged
    texts = [m.text for m in turn.messages if isinstance(m, TextOut)]
    assert "\n".join(texts) == "\n".join(f"文{i}" for i in range(1, 9))


@pytest.mark.parametrize("events", [START, AT_PAINS, ENDED, (*START, say("うーん"), say("?"))])
def test_the_same_input_gives_the_same_turn(events: tuple[Event, ...]) -> None:
    assert play(*events) == play(*events)
    assert play(*events) == play(*events, engine=Engine(load_flow(MINI)))


def test_a_guess_is_confirmed_before_acting_on_it() -> None:
    def guesser(
        text: str,
        *,
        choices: Sequence[ChoiceSpec],
        commands: Sequence[CommandSpec],
        multi: bool,
        faqs: Sequence[FaqSpec] = (),
    ) -> Understanding:
        return Understanding(intents=("jinji",), score=0.6, stage="classifier", confirm=True)

    engine = Engine(load_flow(MINI), understand=guesser)
    turn = play(StartIn(), say("人のお世話をする仕事"), engine=engine)
    assert said(turn) == ["「人事」ということですね？"]
    assert turn.conversation.pending_confirm == ("jinji",)
    agreed = play(say("はい"), engine=engine, conv=turn.conversation)
    assert answers(agreed.conversation) == {"role": "jinji"}
    tapped = play(tap(YES, "role"), engine=engine, conv=turn.conversation)
    assert answers(tapped.conversation) == {"role": "jinji"}
    refused = play(say("いいえ"), engine=engine, conv=turn.conversation)
    assert said(refused) == [TEXTS.not_understood, ROLE_Q]
    assert refused.conversation.pending_confirm == ()


def test_a_first_text_message_is_greeted_once() -> None:
    turn = ENGINE.advance(None, say("こんにちは"))
    assert said(turn) == [GREETING, ROLE_Q]
    assert turn.conversation.misses == 0


def test_a_first_text_message_that_answers_is_taken() -> None:
    turn = ENGINE.advance(None, say("経理です"))
    assert said(turn) == [GREETING, ROLE_Q, PAINS_Q]
    assert answers(turn.conversation) == {"role": "keiri"}


RETURNING_FLOW = """
flow: back
start: q1
returning: welcome
commands:
  - {id: agent, label: 担当者, goto: talk}
states:
  q1:
    say: ["一問目の前置き"]
    ask:
      text: 一問目？
      slot: a
      choices: [{id: x, label: エックス}]
    next: q2
  q2:
    say: ["二問目の前置き"]
    ask:
      text: 二問目？
      slot: b
      choices: [{id: y, label: ワイ}]
    next: bye
  welcome:
    say: ["おかえりなさい"]
    ask:
      text: 続きから？
      slot: back
      choices:
        - {id: go_on, label: 続きから, goto: "@previous"}
        - {id: fresh, label: 最初から, goto: q1, reset: true}
  talk:
    handoff: {reason: 相談}
    next: after
  after:
    ask:
      text: どうしますか？
      slot: after
      choices: [{id: cont, label: 続ける, goto: "@previous"}]
  bye:
    say: ["またね"]
    end: true
"""


def test_a_returning_user_continues_at_the_question_they_left() -> None:
    flow = parse_flow(RETURNING_FLOW, path="back.yaml")
    engine = Engine(flow)
    at_q2 = play(StartIn(), tap("x", "q1"), engine=engine).conversation
    back = play(StartIn(returning=True), tap("go_on", "welcome"), engine=engine, conv=at_q2)
    assert back.conversation.state == "q2"
    assert [outbound_text(m) for m in back.messages] == ["二問目の前置き", "二問目？"]
    assert back.conversation.return_to is None  # used once
    assert back.conversation.slots["a"] == "x"


def test_after_an_agent_the_user_can_pick_up_the_question_they_left() -> None:
    flow = parse_flow(
        RETURNING_FLOW.replace("start: q1", "start: q1\nresume: after"),
        path="back.yaml",
    )
    engine = Engine(flow)
    at_q2 = play(StartIn(), tap("x", "q1"), say("担当者"), engine=engine).conversation
    turn = play(ResumeIn(), tap("cont", "after"), engine=engine, conv=at_q2)
    assert turn.conversation.state == "q2"


def test_after_the_end_the_user_can_pick_up_the_last_question_once() -> None:
    flow = parse_flow(RETURNING_FLOW, path="back.yaml")
    engine = Engine(flow)
    ended = play(StartIn(), tap("x", "q1"), tap("y", "q2"), engine=engine).conversation
    assert ended.status is Status.ENDED and ended.return_to == "q2"
    turn = play(StartIn(returning=True), tap("go_on", "welcome"), engine=engine, conv=ended)
    assert turn.conversation.state == "q2" and turn.conversation.return_to is None


def test_previous_without_a_remembered_question_goes_to_the_fallback() -> None:
    flow = parse_flow(RETURNING_FLOW, path="back.yaml")
    engine = Engine(flow)
    fresh = play(StartIn(), engine=engine).conversation
    turn = play(StartIn(returning=True), tap("go_on", "welcome"), engine=engine, conv=fresh)
    assert turn.conversation.state == "q1"  # no fallback declared: the start


def test_a_withdrawn_handoff_goes_back_to_the_question_the_user_left() -> None:
    flow = parse_flow(
        RETURNING_FLOW.replace("start: q1", "start: q1\nresume: after"), path="b.yaml"
    )
    engine = Engine(flow)
    waiting = play(StartIn(), tap("x", "q1"), say("担当者"), engine=engine).conversation
    turn = engine.advance(waiting, ResumeIn(withdrawn=True))
    assert turn.conversation.state == "q2"  # not the after-agent question


def test_answering_a_check_with_something_else_drops_the_guess() -> None:
    guessing = Engine(
        load_flow(MINI),
        understand=lambda text, **_: Understanding(
            intents=("thanks",), score=0.6, stage="classifier", confirm=True
        ),
    )
    at_pains = play(StartIn(), tap("keiri", "role"), engine=guessing).conversation
    checking = guessing.advance(at_pains, say("誰も褒めてくれない")).conversation
    assert checking.pending_confirm == ("thanks",)
    moved_on = guessing.advance(checking, tap("boring", "pains")).conversation
    assert moved_on.pending_confirm == () and moved_on.selection == ("boring",)
