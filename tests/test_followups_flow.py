"""Follow-ups in the flow vocabulary: lint, the engine (pure), quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.quiet_hours import QuietHours, QuietHoursError
from bot.engine import Engine
from bot.flows.lint import lint
from bot.flows.loader import FlowErrors, parse_flow
from bot.models import (
    ChoiceIn,
    ChoicesOut,
    FollowUpIn,
    FollowUpScheduled,
    StartIn,
    TextIn,
)

FLOW = """\
flow: t
start: hello
commands:
  - {id: stop_push, label: 配信停止, everywhere: true, set: {push: "'off'"}, say: [止めました]}
  - {id: start_push, label: 配信再開, everywhere: true, set: {push: "'on'"}, say: [再開しました]}
  - {id: agent, label: 担当者}
states:
  hello:
    ask:
      text: 続けますか？
      slot: go
      accepts: [agent]
      choices:
        - {id: "yes", label: はい, goto: opted}
  opted:
    set: {push: "'on'"}
    say: [3日後に聞きますね]
    end: true
  check:
    ask:
      text: その後どうですか？
      slot: how
      choices:
        - {id: good, label: いい感じ, goto: "@previous"}
followups:
  - {id: later, entered: opted, delay: 3d, if: "push == 'on'", goto: check}
  - {id: again, command: start_push, delay: 12h, goto: check}
"""


def engine(text: str = FLOW) -> Engine:
    return Engine(parse_flow(text, path="t.yaml"))


def test_entering_the_trigger_state_schedules_the_follow_up() -> None:
    bot = engine()
    started = bot.advance(None, StartIn())
    turn = bot.advance(started.conversation, ChoiceIn(choice="yes", state="hello"))
    assert FollowUpScheduled(followup="later", after_seconds=3 * 86400) in turn.effects


def test_everywhere_commands_work_where_a_question_narrows_the_commands() -> None:
    bot = engine()
    started = bot.advance(None, StartIn())
    stopped = bot.advance(started.conversation, TextIn(text="配信停止"))
    assert stopped.conversation.slots["push"] == "off"
    assert stopped.conversation.state == "hello"  # the question waits on
    assert [m.text for m in stopped.messages] == ["止めました", "続けますか？"]
    resumed = bot.advance(stopped.conversation, TextIn(text="配信再開"))
    assert FollowUpScheduled(followup="again", after_seconds=12 * 3600) in resumed.effects


def test_a_due_follow_up_opens_its_state_and_returns_to_the_question_left() -> None:
    bot = engine()
    started = bot.advance(None, StartIn())
    due = bot.advance(started.conversation, FollowUpIn(followup="later"))
    assert due.conversation.state == "check"
    assert (
        isinstance(due.messages[-1], ChoicesOut) and due.messages[-1].text == "その後どうですか？"
    )
    back = bot.advance(due.conversation, ChoiceIn(choice="good", state="check"))
    assert back.conversation.state == "hello"
    # A follow-up gone from the flow says nothing and moves nothing.
    gone = bot.advance(started.conversation, FollowUpIn(followup="removed"))
    assert gone.messages == () and gone.conversation.state == "hello"


def test_the_condition_is_read_over_the_conversation() -> None:
    bot = engine()
    started = bot.advance(None, StartIn())
    assert not bot.holds(started.conversation, "push | default('') == 'on'")
    opted = bot.advance(started.conversation, ChoiceIn(choice="yes", state="hello"))
    assert bot.holds(opted.conversation, "push == 'on'")
    assert bot.holds(opted.conversation, None)


def test_lint_names_bad_follow_ups() -> None:
    broken = FLOW.replace("goto: check}\n  - {id: again", "goto: chek}\n  - {id: later").replace(
        "command: start_push", "command: start_pushing"
    )
    found = [str(p) for p in lint(parse_flow(broken, path="t.yaml"))]
    assert any("follow-up 'later' goto is the unknown state 'chek'" in p for p in found), found
    assert any("duplicate follow-up id 'later'" in p for p in found), found
    assert any("names the unknown command 'start_pushing'" in p for p in found), found
    with pytest.raises(FlowErrors, match="exactly one of 'entered' or 'command'"):
        parse_flow(
            FLOW.replace("command: start_push,", "command: start_push, entered: opted,"),
            path="t.yaml",
        )
    with pytest.raises(FlowErrors, match="delay"):
        parse_flow(FLOW.replace("delay: 3d", "delay: 3 days"), path="t.yaml")


def test_quiet_hours_across_midnight_and_within_a_day() -> None:
    quiet = QuietHours.parse("21:00-09:00 Asia/Tokyo")
    tokyo = quiet.zone
    assert quiet.ends(datetime(2026, 12, 7, 20, 59, tzinfo=tokyo)) is None
    assert quiet.ends(datetime(2026, 12, 7, 21, 0, tzinfo=tokyo)) == datetime(
        2026, 12, 8, 9, 0, tzinfo=tokyo
    )
    assert quiet.ends(datetime(2026, 12, 8, 3, 0, tzinfo=UTC)) is None  # 12:00 in Tokyo
    assert quiet.ends(datetime(2026, 12, 7, 23, 30, tzinfo=UTC)) == datetime(  # 08:30 Tokyo
        2026, 12, 8, 9, 0, tzinfo=tokyo
    )
    lunch = QuietHours.parse("12:00-13:00 Asia/Tokyo")
    assert lunch.ends(datetime(2026, 12, 7, 12, 30, tzinfo=tokyo)) == datetime(
        2026, 12, 7, 13, 0, tzinfo=tokyo
    )
    assert lunch.ends(datetime(2026, 12, 7, 13, 0, tzinfo=tokyo)) is None
    assert QuietHours.parse("").ends(datetime(2026, 12, 7, 22, 0, tzinfo=tokyo)) is None


@pytest.mark.parametrize(
    "bad",
    ["21-9", "21:00-09:00", "25:00-09:00 Asia/Tokyo", "21:00-21:00 UTC", "21:00-09:00 Mars/Base"],
)
def test_unreadable_quiet_hours_are_refused_with_the_value(bad: str) -> None:
    with pytest.raises(QuietHoursError, match="QUIET_HOURS"):
        QuietHours.parse(bad)


def test_a_postback_may_name_a_command_by_its_words() -> None:
    """A rich menu tile carries 「面談を予約」 rather than the booking command's id."""
    bot = engine()
    started = bot.advance(None, StartIn())
    tapped = bot.advance(started.conversation, ChoiceIn(choice="配信停止"))
    assert tapped.conversation.slots["push"] == "off"
    assert [m.text for m in tapped.messages] == ["止めました", "続けますか？"]
