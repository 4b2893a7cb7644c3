"""Handoffs through the real app: web chat user, agent API, timeouts with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_app import AgentApp, agent_app

from bot.errors import ChannelError
from bot.handoff.desk import CANCELLED_TEXT, timeout_text
from bot.models import CardOut, Channel, ChoicesOut, ConversationKey, Mode, StartIn, TextIn, TextOut


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AgentApp]:
    with agent_app(tmp_path) as served:
        served.add_agent("hanako", "花子")
        served.add_agent("taro", "太郎")
        yield served


def texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [m.get("text") or m.get("title") or "" for m in messages]


@dataclass
class RecordingSender:
    """A channel's `Sender` seam: records deliveries, or fails like a remote API would."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False

    async def send(
        self,
        key: ConversationKey,
        messages: Sequence[TextOut | ChoicesOut | CardOut],
        *,
        idempotency_key: str,
        sender_name: str | None = None,
    ) -> None:
        if self.failing:
            raise ChannelError("remote said 500")
        self.sent.append(
            {
                "key": key,
                "texts": [m.text for m in messages if not isinstance(m, CardOut)],
                "idempotency_key": idempotency_key,
                "sender_name": sender_name,
            }
        )


# ---------------------------------------------------------------- the whole lifecycle


def test_web_user_agent_takes_over_replies_and_hands_back(app: AgentApp) -> None:
    client = app.client
    session = app.web_user()
    asked = app.say(session, "担当者と話したい")
    assert asked["mode"] == "waiting"
    assert texts(asked["messages"])[0] == "担当者を呼びます"
    assert "ふだんは15分ほどで担当者からお返事します" in texts(asked["messages"])[-1]

    [queued] = app.desk_queue()
    assert (queued["status"], queued["channel"], queued["reason"]) == ("waiting", "web", "相談希望")
    handoff = queued["id"]
    assert app.say(session, "待っています")["messages"] == []  # the bot stays silent

    claimed = client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["status"], claimed.json()["agent_name"]) == ("claimed", "花子")
    assert app.history(session)["mode"] == "agent"

    quiet = app.say(session, "転職も考えています")
    assert quiet["messages"] == [] and quiet["mode"] == "agent"
    detail = client.get(f"/api/v1/handoffs/{handoff}", headers=app.api("hanako")).json()
    user_lines = [line["text"] for line in detail["transcript"] if line["sender"] == "user"]
    assert user_lines[-2:] == ["待っています", "転職も考えています"]
    assert detail["summary"]["reason"] == "相談希望"

    before = app.history(session)["last_id"]
    sent = client.post(
        f"/api/v1/handoffs/{handoff}/messages",
        json={"text": "担当の花子です。お話を聞かせてください。"},
        headers=app.api("hanako"),
    )
    assert sent.status_code == 201, sent.text
    noted = client.post(
        f"/api/v1/handoffs/{handoff}/notes",
        json={"text": "転職意向あり（ユーザーには見えない）"},
        headers=app.api("taro"),
    )
    assert noted.status_code == 201, noted.text

    seen = app.history(session, after=before)
    assert [(m["sender"], m["text"]) for m in seen["messages"]] == [
        ("agent", "担当の花子です。お話を聞かせてください。")
    ]  # the note never reaches the user

    released = client.post(f"/api/v1/handoffs/{handoff}/release", headers=app.api("hanako"))
    assert released.status_code == 200, released.text
    assert released.json()["handoff"]["status"] == "released"
    assert "おかえりなさい" in released.json()["resumed_with"]

    back = app.history(session, after=seen["last_id"])
    assert back["mode"] == "bot"
    first = back["messages"][0]
    assert (first["sender"], first["text"]) == ("bot", "おかえりなさい")

    detail = client.get(f"/api/v1/handoffs/{handoff}", headers=app.api("taro")).json()
    assert [(c["from_mode"], c["to_mode"], c["who"]) for c in detail["mode_changes"]] == [
        ("bot", "waiting", "user"),
        ("waiting", "agent", "hanako"),
        ("agent", "bot", "hanako"),
    ]
    assert "note" in [line["sender"] for line in detail["transcript"]]
    assert app.desk_queue() == []


def test_two_agents_claiming_at_once_one_wins_and_the_other_learns_who(app: AgentApp) -> None:
    handoff = app.waiting_handoff(app.web_user())

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api(name))
                        for name in ("hanako", "taro")
                    )
                )
            )

    answers = app.run(both)

    assert sorted(a.status_code for a in answers) == [200, 409]
    winner = next(a for a in answers if a.status_code == 200).json()
    loser = next(a for a in answers if a.status_code == 409).json()
    assert loser["error"] == "already_claimed"
    assert (loser["agent"], loser["agent_name"]) == (winner["agent"], winner["agent_name"])


def test_only_the_holder_may_reply_or_release(app: AgentApp) -> None:
    handoff = app.waiting_handoff(app.web_user())
    url = f"/api/v1/handoffs/{handoff}"
    early = app.client.post(f"{url}/messages", json={"text": "やあ"}, headers=app.api("hanako"))
    assert early.status_code == 403 and early.json()["error"] == "not_holder"
    app.client.post(f"{url}/claim", headers=app.api("hanako"))

    assert app.client.post(f"{url}/release", headers=app.api("taro")).status_code == 403
    assert (
        app.client.post(f"{url}/messages", json={"text": "横から"}, headers=app.api("taro"))
    ).status_code == 403
    assert app.client.post(f"{url}/release", headers=app.api("hanako")).status_code == 200
    again = app.client.post(f"{url}/release", headers=app.api("hanako"))
    assert again.status_code == 409 and again.json()["error"] == "closed"
    assert (
        app.client.post("/api/v1/handoffs/999999/claim", headers=app.api("taro")).status_code == 404
    )


# ---------------------------------------------------------------- the user goes back


@pytest.mark.parametrize("how", ["text", "button"])
def test_cancel_while_waiting_resumes_the_bot(app: AgentApp, how: str) -> None:
    session = app.web_user()
    handoff = app.waiting_handoff(session)
    url = f"/api/chat/sessions/{session}/messages"
    if how == "text":
        back = app.client.post(url, json={"text": "ボットに戻る"}).json()
    else:
        back = app.client.post(url, json={"choice": "__bot__", "state": "handoff"}).json()
    app.settle()

    assert back["mode"] == "bot"
    # The user picks up the question they left, not the after-agent question.
    assert texts(back["messages"])[:2] == [CANCELLED_TEXT, "お仕事は？"]
    assert app.desk_queue() == []
    closed = app.client.get(
        "/api/v1/handoffs", params={"status": "closed"}, headers=app.api("hanako")
    ).json()
    assert [(h["id"], h["status"]) for h in closed] == [(handoff, "cancelled")]
    # Claiming what the user withdrew is refused.
    assert (
        app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako")).status_code
        == 409
    )


def test_going_back_once_an_agent_holds_it_is_a_message_for_the_agent(app: AgentApp) -> None:
    session = app.web_user()
    handoff = app.waiting_handoff(session)
    app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))

    reply = app.say(session, "ボットに戻る")

    assert (reply["mode"], reply["messages"]) == ("agent", [])
    detail = app.client.get(f"/api/v1/handoffs/{handoff}", headers=app.api("hanako")).json()
    assert detail["status"] == "claimed"
    assert detail["transcript"][-1]["text"] == "ボットに戻る"


# ---------------------------------------------------------------- time


def test_timeout_tells_the_user_once_and_keeps_the_handoff_queued(app: AgentApp) -> None:
    session = app.web_user()
    handoff = app.waiting_handoff(session)
    last = app.history(session)["last_id"]

    app.clock.advance(minutes=14, seconds=59)
    assert app.run(app.desk.check_timeouts) == []
    app.clock.advance(seconds=1)
    assert app.run(app.desk.check_timeouts) == [handoff]
    app.clock.advance(minutes=30)
    assert app.run(app.desk.check_timeouts) == []  # once only

    told = app.history(session, after=last)
    assert [(m["sender"], m["text"]) for m in told["messages"]] == [("bot", timeout_text())]
    # Nobody is signed in to the console here: the bot must not say agents are busy with others.
    assert (
        "ほかのご相談" not in timeout_text()
        and "まだ担当者からお返事できていません" in timeout_text()
    )
    assert told["status"] == "担当者を呼んでいます…"  # within agent hours
    assert told["mode"] == "waiting"
    [queued] = app.desk_queue()
    assert (queued["id"], queued["status"], queued["timeout_notified"]) == (
        handoff,
        "waiting",
        True,
    )
    # The user may leave a message; it waits for the agent.
    assert app.say(session, "では伝言です")["messages"] == []


def test_outside_agent_hours_the_user_learns_when_agents_are_back(tmp_path: Path) -> None:
    with agent_app(tmp_path, agent_hours="Mon-Fri 09:00-18:00 Asia/Tokyo") as app:
        app.add_agent("hanako", "花子")
        app.clock.now = app.clock.now.replace(day=5, hour=3)  # Saturday 12:00 in Tokyo
        session = app.web_user()

        asked = app.say(session, "担当者と話したい")

        notice = texts(asked["messages"])[-1]
        assert "対応時間外です（対応時間: 月〜金 9:00〜18:00）" in notice
        assert "4月7日（月）9:00から" in notice
        # The chat's status line says whom the user waits for and when, not 「呼んでいます」.
        assert asked["status"] == "担当者からの返信待ち（月曜9:00〜）"
        assert app.history(session)["status"] == "担当者からの返信待ち（月曜9:00〜）"
        [queued] = app.desk_queue()
        # No timeout notice over the weekend: the clock starts when agents are back.
        app.clock.advance(days=1, hours=20)  # Monday 08:00 in Tokyo
        assert app.run(app.desk.check_timeouts) == []
        app.clock.advance(hours=1, minutes=15)  # Monday 09:15
        assert app.run(app.desk.check_timeouts) == [queued["id"]]


# ---------------------------------------------------------------- other channels


def test_agent_words_go_out_on_the_users_channel_with_the_agents_name(app: AgentApp) -> None:
    line = RecordingSender()
    app.runtime.senders[Channel.LINE] = line
    key = ConversationKey(channel=Channel.LINE, address="U" + "1" * 32)
    app.run(lambda: app.runtime.service.handle(key, StartIn()))
    app.run(lambda: app.runtime.service.handle(key, TextIn(text="担当者")))
    app.settle()
    [queued] = app.desk_queue()
    assert queued["channel"] == "line"
    url = f"/api/v1/handoffs/{queued['id']}"
    app.client.post(f"{url}/claim", headers=app.api("hanako"))

    sent = app.client.post(f"{url}/messages", json={"text": "花子です"}, headers=app.api("hanako"))
    app.client.post(f"{url}/notes", json={"text": "内部メモ"}, headers=app.api("hanako"))
    app.client.post(f"{url}/release", headers=app.api("hanako"))

    message_id = sent.json()["message"]["id"]
    assert line.sent == [
        {
            "key": key,
            "texts": ["花子です"],
            "idempotency_key": f"agent-message-{message_id}",
            "sender_name": "花子",
        },
        {
            "key": key,
            "texts": ["おかえりなさい", "またね"],
            "idempotency_key": f"handoff-{queued['id']}-resume",
            "sender_name": None,
        },
    ]


def test_a_failed_delivery_is_reported_and_kept(app: AgentApp) -> None:
    app.runtime.senders[Channel.LINE] = RecordingSender(failing=True)
    key = ConversationKey(channel=Channel.LINE, address="U" + "2" * 32)
    app.run(lambda: app.runtime.service.handle(key, TextIn(text="担当者")))
    app.settle()
    [queued] = app.desk_queue()
    url = f"/api/v1/handoffs/{queued['id']}"
    app.client.post(f"{url}/claim", headers=app.api("hanako"))

    sent = app.client.post(f"{url}/messages", json={"text": "届くかな"}, headers=app.api("hanako"))

    assert sent.status_code == 502 and sent.json()["error"] == "delivery_failed"
    transcript = app.client.get(url, headers=app.api("hanako")).json()["transcript"]
    assert transcript[-1]["text"] == "届くかな"


def test_users_never_see_each_others_conversations(app: AgentApp) -> None:
    line = RecordingSender()
    app.runtime.senders[Channel.LINE] = line
    session = app.web_user()
    other = app.web_user()
    # A LINE user whose id happens to equal the web session id is still someone else.
    twin = ConversationKey(channel=Channel.LINE, address=session)
    app.run(lambda: app.runtime.service.handle(twin, TextIn(text="担当者")))
    app.settle()
    web_handoff = app.waiting_handoff(session)
    line_handoff = next(h["id"] for h in app.desk_queue() if h["channel"] == "line")
    for handoff in (web_handoff, line_handoff):
        app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))
    app.client.post(
        f"/api/v1/handoffs/{line_handoff}/messages",
        json={"text": "LINEの方へ"},
        headers=app.api("hanako"),
    )
    app.say(other, "ひみつの話")

    assert "LINEの方へ" not in texts(app.history(session)["messages"])
    assert "ひみつの話" not in texts(app.history(session)["messages"])
    assert [s["key"] for s in line.sent] == [twin]
    web_detail = app.client.get(f"/api/v1/handoffs/{web_handoff}", headers=app.api("hanako"))
    assert "LINEの方へ" not in [line["text"] for line in web_detail.json()["transcript"]]


# ---------------------------------------------------------------- repairs


def test_a_request_whose_handoff_was_never_queued_is_repaired(app: AgentApp) -> None:
    key = ConversationKey(channel=Channel.WEB, address="lost-request-000001")
    store = app.runtime.store
    # As if the process died between the turn (mode waiting) and queueing the handoff.
    app.run(lambda: app.runtime.service.handle(key, StartIn()))
    app.run(lambda: store.set_mode(key, Mode.WAITING, now=app.clock.now))
    assert app.desk_queue() == []

    app.clock.advance(minutes=1)
    assert app.run(app.desk.repair) == 0  # too fresh: a live turn may still be queueing it
    app.clock.advance(minutes=2)
    assert app.run(app.desk.repair) == 1

    [queued] = app.desk_queue()
    assert queued["status"] == "waiting" and queued["channel"] == "web"


def test_a_release_whose_resume_failed_is_repaired(app: AgentApp) -> None:
    session = app.web_user()
    handoff = app.waiting_handoff(session)
    app.client.post(f"/api/v1/handoffs/{handoff}/claim", headers=app.api("hanako"))
    # As if the process died between closing the handoff and the bot's resume turn.
    app.run(lambda: app.desk.handoffs.release(handoff, agent="hanako", now=app.clock.now))
    assert app.history(session)["mode"] == "agent"

    app.clock.advance(minutes=3)
    assert app.run(app.desk.repair) == 1

    back = app.history(session)
    assert back["mode"] == "bot" and "おかえりなさい" in texts(back["messages"])
