"""Our messages as LINE message objects: within LINE's limits and valid against messaging-api.yml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.line_api import SdkValidator, SpecValidator, require_spec, validator_for

from bot.channels.line.render import (
    MAX_QUICK_REPLIES,
    SELECTED_MARK,
    batches,
    clip,
    render,
    split_text,
)
from bot.channels.line.webhook import choice_from_postback
from bot.engine import DONE
from bot.models import CardField, CardOut, Choice, ChoiceIn, ChoicesOut, TextOut


@pytest.fixture(scope="module")
def spec() -> Iterator[SpecValidator | SdkValidator]:
    yield validator_for(require_spec(), "messaging-api.yml")


def as_json(messages: list[Any]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in messages]


def valid(spec: SpecValidator | SdkValidator, messages: list[dict[str, Any]]) -> None:
    for group in batches(messages):
        errors = spec.errors("PushMessageRequest", {"to": "U" + "0" * 32, "messages": group})
        assert errors == []


def test_choices_become_postback_quick_replies_showing_the_label(
    spec: SpecValidator | SdkValidator,
) -> None:
    question = ChoicesOut(
        text="まず、いまのお仕事を教えてください。",
        state="ask_role",
        choices=(Choice(id="keiri", label="経理"), Choice(id="jinji", label="人事")),
    )
    [message] = as_json(render([question]))
    valid(spec, [message])
    assert message["text"] == question.text
    actions = [item["action"] for item in message["quickReply"]["items"]]
    assert [a["label"] for a in actions] == ["経理", "人事"]
    assert [a["displayText"] for a in actions] == ["経理", "人事"]
    assert [choice_from_postback(a["data"]) for a in actions] == [
        ChoiceIn(choice="keiri", state="ask_role", label="経理"),
        ChoiceIn(choice="jinji", state="ask_role", label="人事"),
    ]


def test_multi_select_marks_what_is_chosen_and_offers_done(
    spec: SpecValidator | SdkValidator,
) -> None:
    question = ChoicesOut(
        text="いま選んでいるのは「毎日同じことの繰り返し」です。",
        state="ask_frustrations",
        multi=True,
        choices=(
            Choice(id="invisible", label="成果が見えにくい"),
            Choice(id="repetitive", label="毎日同じことの繰り返し", selected=True),
            Choice(id=DONE, label="これで全部"),
        ),
    )
    [message] = as_json(render([question]))
    valid(spec, [message])
    labels = [item["action"]["label"] for item in message["quickReply"]["items"]]
    assert labels == ["成果が見えにくい", f"{SELECTED_MARK}毎日同じことの繰り返し", "これで全部"]
    done = json.loads(message["quickReply"]["items"][-1]["action"]["data"])
    assert done["c"] == DONE


def test_long_labels_are_clipped_but_the_tap_shows_them_whole(
    spec: SpecValidator | SdkValidator,
) -> None:
    label = "とても長い選択肢のラベルで二十文字を超えてしまうもの"
    question = ChoicesOut(text="?", state="s", choices=(Choice(id="a", label=label),))
    [message] = as_json(render([question]))
    valid(spec, [message])
    action = message["quickReply"]["items"][0]["action"]
    assert len(action["label"]) == 20 and action["label"].endswith("…")
    assert action["displayText"] == label


def test_more_than_thirteen_choices_keep_the_last_button(
    spec: SpecValidator | SdkValidator,
) -> None:
    choices = tuple(Choice(id=f"c{i}", label=f"選択{i}") for i in range(15))
    [message] = as_json(render([ChoicesOut(text="?", state="s", choices=choices)]))
    valid(spec, [message])
    items = message["quickReply"]["items"]
    assert len(items) == MAX_QUICK_REPLIES
    assert items[-1]["action"]["label"] == "選択14"


def test_ids_too_long_for_postback_data_fall_back_to_a_message_action(
    spec: SpecValidator | SdkValidator,
) -> None:
    question = ChoicesOut(text="?", state="s" * 200, choices=(Choice(id="c" * 200, label="はい"),))
    [message] = as_json(render([question]))
    valid(spec, [message])
    assert message["quickReply"]["items"][0]["action"] == {
        "type": "message",
        "label": "はい",
        "text": "はい",
    }


def test_the_card_is_a_flex_bubble_with_alt_text(spec: SpecValidator | SdkValidator) -> None:
    card = CardOut(
        title="あなたのやりがい相談まとめ",
        fields=(CardField(label="お仕事", value="経理"), CardField(label="空", value="")),
        footer="この内容が担当者に伝わるのは、あなたが相談を希望したときだけです。",
    )
    [message] = as_json(render([card]))
    valid(spec, [message])
    assert message["type"] == "flex"
    assert message["altText"].startswith("あなたのやりがい相談まとめ")
    flat = json.dumps(message["contents"], ensure_ascii=False)
    assert "お仕事" in flat and "経理" in flat and "担当者に伝わる" in flat
    assert '"空"' not in flat


def test_long_text_is_split_at_5000_utf16_units_without_breaking_emoji(
    spec: SpecValidator | SdkValidator,
) -> None:
    text = "あ" * 4999 + "😀" + "い" * 10  # the emoji is two units: it cannot end piece one
    pieces = split_text(text)
    assert pieces == ["あ" * 4999, "😀" + "い" * 10]
    valid(spec, as_json(render([TextOut(text=text)])))


def test_splits_prefer_a_line_break_near_the_limit() -> None:
    text = "a" * 4000 + "\n" + "b" * 4000
    assert split_text(text) == ["a" * 4000 + "\n", "b" * 4000]
    assert split_text("") == [""]
    assert len(split_text("x" * 12000)) == 3


def test_a_long_question_keeps_its_buttons_on_the_last_piece(
    spec: SpecValidator | SdkValidator,
) -> None:
    question = ChoicesOut(text="か" * 6000, state="s", choices=(Choice(id="a", label="A"),))
    first, second = as_json(render([question]))
    valid(spec, [first, second])
    assert "quickReply" not in first and second["quickReply"]["items"]


def test_more_than_five_messages_make_several_requests(spec: SpecValidator | SdkValidator) -> None:
    messages = as_json(render([TextOut(text=str(i)) for i in range(12)]))
    groups = batches(messages)
    assert [len(g) for g in groups] == [5, 5, 2]
    valid(spec, messages)


def test_a_sender_name_rides_on_every_message(spec: SpecValidator | SdkValidator) -> None:
    messages = as_json(render([TextOut(text="a"), TextOut(text="b")], sender_name="担当 山田"))
    valid(spec, messages)
    assert [m["sender"] for m in messages] == [{"name": "担当 山田"}] * 2


def test_clip() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab…"
