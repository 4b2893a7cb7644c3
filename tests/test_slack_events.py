"""Parsing Slack request bodies into our own events: what the bot acts on, at which address."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from fakes.slack_api import BOT_ID, BOT_USER_ID, Posted, SlackEvents, dm_channel

from bot.channels.slack.blocks import render
from bot.channels.slack.events import destination, parse, plain_text
from bot.models import Choice, ChoiceIn, ChoicesOut, MediaIn, StartIn, TextIn

USER = "U0USER01"
CHANNEL = "C0GENERAL"
EVENTS = SlackEvents("secret")


def body(event: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(EVENTS.event_callback(event))
    return parsed


def clicked(message: Posted, label: str, *, user: str = USER) -> dict[str, Any]:
    form = EVENTS.block_actions(user, message, message.button(label), action_ts="1700000500.25")
    payload: dict[str, Any] = json.loads(parse_qs(form)["payload"][0])
    return payload


def question(channel: str, *, thread_ts: str | None = None) -> Posted:
    [rendered] = render(
        ChoicesOut(
            text="お仕事は？",
            state="role",
            choices=(Choice(id="keiri", label="経理"), Choice(id="jinji", label="人事")),
        )
    )
    return Posted(
        channel=channel,
        ts="1700000400.000100",
        text=rendered.text,
        blocks=list(rendered.blocks),
        thread_ts=thread_ts,
    )


def test_plain_text_drops_our_mention_and_unescapes() -> None:
    text = (
        f"<@{BOT_USER_ID}> A &amp; B &lt;3 <@U0OTHER|sato> <https://x.example|リンク> <#C1|random>"
    )
    assert plain_text(text, bot_user_id=BOT_USER_ID) == "A & B <3 sato リンク random"
    assert plain_text("<https://x.example>", bot_user_id=None) == "https://x.example"


def test_a_dm_is_a_conversation_at_its_im_channel() -> None:
    inbound = parse(body(EVENTS.dm(USER, "経理です", "1700000001.000200")), bot_user_id=BOT_USER_ID)
    assert inbound is not None
    assert inbound.address == dm_channel(USER) and inbound.origin == "dm"
    assert inbound.event_id == f"{dm_channel(USER)}:1700000001.000200"
    assert inbound.event == TextIn(text="経理です")
    assert inbound.occurred_at == datetime.fromtimestamp(1700000001.0002, UTC)
    # A reply in a thread inside the DM is the same conversation.
    threaded = EVENTS.dm(USER, "はい", "1700000002.0", thread_ts="1700000001.000200")
    inbound = parse(body(threaded), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.address == dm_channel(USER)


@pytest.mark.parametrize(
    "change",
    [
        {"bot_id": BOT_ID},
        {"user": BOT_USER_ID},
        {"subtype": "bot_message", "bot_id": "B0OTHER"},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"hidden": True},
        {"text": f"<@{BOT_USER_ID}>"},  # nothing left to answer
        {"user": None},
    ],
)
def test_messages_the_bot_does_not_answer(change: dict[str, Any]) -> None:
    event = {**EVENTS.dm(USER, "経理", "1700000001.000300"), **change}
    assert parse(body(event), bot_user_id=BOT_USER_ID) is None


def test_a_shared_file_is_read_by_its_comment_or_thanked_for() -> None:
    """Files are answered like LINE's stickers and photos: by the service's kind reply."""
    shared = {**EVENTS.dm(USER, "経理です", "1700000001.000400"), "subtype": "file_share"}
    inbound = parse(body(shared), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.event == TextIn(text="経理です")
    alone = {**shared, "text": "", "files": [{"id": "F1", "mimetype": "image/png"}]}
    inbound = parse(body(alone), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.event == MediaIn(type="image")
    pdf = {**alone, "files": [{"id": "F2", "mimetype": "application/pdf"}]}
    inbound = parse(body(pdf), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.event == MediaIn(type="file")


def test_channel_messages_count_only_as_thread_replies() -> None:
    top = EVENTS.channel_message(USER, CHANNEL, "ランチ", "1700000003.0")
    assert parse(body(top), bot_user_id=BOT_USER_ID) is None
    reply = EVENTS.channel_message(
        USER, CHANNEL, "単調です", "1700000004.0", thread_ts="1700000003.0"
    )
    inbound = parse(body(reply), bot_user_id=BOT_USER_ID)
    assert inbound is not None
    assert (inbound.origin, inbound.address) == ("thread", f"{CHANNEL}:1700000003.0")


def test_a_mention_starts_a_conversation_in_its_thread() -> None:
    text = f"<@{BOT_USER_ID}> 経理です"
    inbound = parse(
        body(EVENTS.mention(USER, CHANNEL, text, "1700000005.0")), bot_user_id=BOT_USER_ID
    )
    assert inbound is not None
    assert (inbound.origin, inbound.address) == ("mention", f"{CHANNEL}:1700000005.0")
    assert inbound.event == TextIn(text="経理です")
    # In a thread: the thread's conversation; as message and app_mention: one event id.
    in_thread = EVENTS.mention(USER, CHANNEL, text, "1700000006.0", thread_ts="1700000005.0")
    mention = parse(body(in_thread), bot_user_id=BOT_USER_ID)
    as_message = EVENTS.channel_message(
        USER, CHANNEL, text, "1700000006.0", thread_ts="1700000005.0"
    )
    message = parse(body(as_message), bot_user_id=BOT_USER_ID)
    assert mention is not None and message is not None
    assert mention.address == message.address == f"{CHANNEL}:1700000005.0"
    assert mention.event_id == message.event_id


def test_a_bare_mention_greets_or_offers_to_go_on() -> None:
    bare = EVENTS.mention(USER, CHANNEL, f"<@{BOT_USER_ID}>", "1700000007.0")
    inbound = parse(body(bare), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.event == StartIn(returning=True)


def test_a_click_in_a_dm_and_in_a_thread() -> None:
    inbound = parse(clicked(question(dm_channel(USER)), "経理"), bot_user_id=BOT_USER_ID)
    assert inbound is not None
    assert inbound.address == dm_channel(USER) and inbound.origin == "button"
    assert inbound.event == ChoiceIn(choice="keiri", state="role", label="経理")
    assert inbound.event_id == f"click:{USER}:1700000500.25"
    assert inbound.clicked is not None
    assert (inbound.clicked.ts, inbound.clicked.question) == ("1700000400.000100", "お仕事は？")

    in_thread = question(CHANNEL, thread_ts="1700000005.0")
    inbound = parse(clicked(in_thread, "人事"), bot_user_id=BOT_USER_ID)
    assert inbound is not None and inbound.address == f"{CHANNEL}:1700000005.0"


def test_clicks_that_are_not_ours_or_malformed_are_ignored() -> None:
    payload = clicked(question(dm_channel(USER)), "経理")
    other_app = {**payload, "actions": [{**payload["actions"][0], "action_id": "other"}]}
    assert parse(other_app, bot_user_id=BOT_USER_ID) is None
    forged = {**payload, "actions": [{**payload["actions"][0], "value": "not json"}]}
    assert parse(forged, bot_user_id=BOT_USER_ID) is None
    assert parse({**payload, "user": None}, bot_user_id=BOT_USER_ID) is None
    assert parse({**payload, "actions": []}, bot_user_id=BOT_USER_ID) is None
    assert parse({"type": "view_submission"}, bot_user_id=BOT_USER_ID) is None
    assert parse({"type": "event_callback", "event": "x"}, bot_user_id=BOT_USER_ID) is None


def test_destination_of_an_address() -> None:
    assert destination("D0USER01").model_dump() == {"channel": "D0USER01", "thread_ts": None}
    assert destination("C1:1700000005.0").model_dump() == {
        "channel": "C1",
        "thread_ts": "1700000005.0",
    }
