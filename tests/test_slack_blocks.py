"""Block Kit rendering: within Slack's limits (checked by the fake's validator), with fallbacks."""

from __future__ import annotations

import pytest
from fakes.slack_api import block_kit_errors

from bot.channels.slack.blocks import (
    MAX_BLOCKS,
    SlackMessage,
    button_value,
    read_button_value,
    render,
    render_answer,
)
from bot.models import CardField, CardOut, Choice, ChoicesOut, TextOut


def valid(messages: list[SlackMessage]) -> list[SlackMessage]:
    for message in messages:
        assert message.text.strip(), "every message carries a text fallback"
        assert block_kit_errors(list(message.blocks)) == []
    return messages


def test_a_text_is_one_plain_section() -> None:
    [message] = valid(render(TextOut(text="こんにちは *太字ではない* <b>")))
    assert message.text == "こんにちは *太字ではない* <b>"
    assert message.blocks == (
        {
            "type": "section",
            "text": {"type": "plain_text", "text": "こんにちは *太字ではない* <b>", "emoji": True},
        },
    )


def test_a_long_text_is_cut_into_sections_at_line_breaks() -> None:
    text = "\n".join(f"{i:04d}" + "あ" * 95 for i in range(70))  # 7,000 characters
    [message] = valid(render(TextOut(text=text)))
    parts = [block["text"]["text"] for block in message.blocks]
    assert len(parts) == 3 and all(len(p) <= 3000 for p in parts)
    assert "\n".join(parts) == text
    assert len(message.text) <= 4000


def test_a_question_has_buttons_carrying_state_choice_and_label() -> None:
    question = ChoicesOut(
        text="お仕事は？",
        state="role",
        choices=(Choice(id="keiri", label="経理"), Choice(id="jinji", label="人事")),
    )
    [message] = valid(render(question))
    assert message.text == "お仕事は？"
    section, actions = message.blocks
    assert section["text"]["text"] == "お仕事は？"
    buttons = actions["elements"]
    assert [b["text"]["text"] for b in buttons] == ["経理", "人事"]
    assert len({b["action_id"] for b in buttons}) == 2
    value = read_button_value(buttons[0]["value"])
    assert value is not None
    assert (value.state, value.choice, value.label) == ("role", "keiri", "経理")


def test_many_and_long_choices_stay_within_limits() -> None:
    choices = tuple(Choice(id=f"c{i}", label=f"{i}" + "長" * 100) for i in range(30))
    [message] = valid(render(ChoicesOut(text="どれ？", state="s", choices=choices)))
    actions = [b for b in message.blocks if b["type"] == "actions"]
    assert [len(a["elements"]) for a in actions] == [25, 5]
    label = actions[0]["elements"][0]["text"]["text"]
    assert len(label) == 75 and label.endswith("…")
    # The full label still travels in the value, for the transcript.
    value = read_button_value(actions[0]["elements"][0]["value"])
    assert value is not None and value.label == choices[0].label


def test_multi_select_marks_the_picks_and_offers_done() -> None:
    question = ChoicesOut(
        text="いま選んでいるのは「単調」です。",
        state="pains",
        multi=True,
        choices=(
            Choice(id="boring", label="単調", selected=True),
            Choice(id="thanks", label="評価"),
            Choice(id="__done__", label="これで全部"),
        ),
    )
    [message] = valid(render(question))
    buttons = message.blocks[-1]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["✓ 単調", "評価", "これで全部"]
    assert [b.get("style") for b in buttons] == ["primary", None, None]


def test_a_card_is_a_header_and_sections_with_a_plain_fallback() -> None:
    card = CardOut(
        title="まとめ",
        fields=(CardField(label="職種", value="経理"), CardField(label="A&B", value="<x>")),
        footer="またね",
    )
    [message] = valid(render(card))
    assert message.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "まとめ", "emoji": True},
    }
    assert message.blocks[1]["text"] == {"type": "mrkdwn", "text": "*職種*\n経理"}
    assert message.blocks[2]["text"]["text"] == "*A&amp;B*\n&lt;x&gt;"
    assert message.blocks[3]["text"]["text"] == "またね"
    assert message.text == card.as_text()


def test_a_huge_card_is_split_into_messages_of_at_most_50_blocks() -> None:
    fields = tuple(CardField(label=f"項目{i}", value="値" * 5000) for i in range(30))
    messages = valid(render(CardOut(title="長" * 200, fields=fields)))
    assert len(messages) == 2
    assert all(len(m.blocks) <= MAX_BLOCKS for m in messages)
    header = messages[0].blocks[0]["text"]["text"]
    assert len(header) == 150
    sections = [b for m in messages for b in m.blocks if b["type"] == "section"]
    assert len(sections) == 60 and all(len(s["text"]["text"]) <= 3000 for s in sections)


def test_an_agent_speaks_under_their_name() -> None:
    [message] = valid(render(TextOut(text="担当の佐藤です"), speaker="佐藤"))
    assert message.blocks[0]["type"] == "context"
    assert message.blocks[0]["elements"][0]["text"] == "担当: 佐藤"
    assert message.text == "担当: 佐藤\n担当の佐藤です"


def test_an_answered_question_keeps_the_question_and_shows_the_answer_without_buttons() -> None:
    message = render_answer("お仕事は？", "経理")
    valid([message])
    assert [b["type"] for b in message.blocks] == ["section", "context"]
    assert message.blocks[1]["elements"][0]["text"] == "✅ 経理"
    assert message.text == "お仕事は？\n✅ 経理"


@pytest.mark.parametrize(
    "value",
    [None, 3, "", "x", "[]", '{"s": 1, "c": "a"}', '{"s": "a"}', '{"s": "a", "c": ""}'],
)
def test_values_that_are_not_our_buttons_are_refused(value: object) -> None:
    assert read_button_value(value) is None


def test_a_button_value_fits_even_with_an_absurd_label() -> None:
    value = button_value(state="s", choice="c", label="x" * 3000)
    assert len(value) <= 2000
    decoded = read_button_value(value)
    assert decoded is not None and (decoded.state, decoded.choice, decoded.label) == (
        "s",
        "c",
        None,
    )
