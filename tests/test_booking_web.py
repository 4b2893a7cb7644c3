"""Booking a consultation end to end in the web chat, through the real app: finish the
advice, give contact details with consent, book a slot, get the confirmation and its .ics,
reschedule, cancel; agents publish hours through the API and see the bookings there; two
users racing for one slot never both get it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from agent_app import TUESDAY_10_JST, AgentApp, agent_app
from career_path import TURNS
from fakes.clock import FakeClock

from bot.models import Channel, ChoiceIn, ConversationKey
from bot.records import Timer
from bot.store.schema import facts

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://bot.example.jp"
SETTINGS = {
    "flows_dir": ROOT / "flows",
    "default_flow": "career",
    "public_holidays": False,
    "public_url": PUBLIC_URL,
    "meeting_method": "video",
    "meeting_url": "https://meet.example.jp/zcareer",
    "privacy_policy_url": "https://example.jp/privacy",
    "privacy_policy_version": "2025-04",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TUESDAY_10_JST)


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[AgentApp]:
    """The app at Tuesday 2025-04-01 10:00 JST (one fake clock for the handoff desk, the
    booking desk and the timers); 佐藤 takes consultations on Tuesday evenings and Saturday
    mornings."""
    with agent_app(tmp_path, runtime_clock=clock, **SETTINGS) as served:
        served.desk.clock = clock.now
        served.add_agent("sato", "佐藤")
        for day, start, minutes in (("Tue", "18:00", 120), ("Sat", "10:00", 60)):
            added = served.client.post(
                "/api/v1/availability",
                json={"kind": "weekly", "day": day, "start": start, "minutes": minutes},
                headers=served.api("sato"),
            )
            assert added.status_code == 201, added.text
        yield served


class WebUser:
    def __init__(self, app: AgentApp) -> None:
        self.app = app
        self.session = app.web_user()
        self.last: dict[str, Any] = {}

    def say(self, text: str) -> dict[str, Any]:
        self.last = self.app.say(self.session, text)
        return self.last

    def tap(self, label: str) -> dict[str, Any]:
        question = self.question()
        choice = next((c for c in question["choices"] if c["label"] == label), None)
        assert choice is not None, f"{label!r} not in {[c['label'] for c in question['choices']]}"
        answer = self.app.client.post(
            f"/api/chat/sessions/{self.session}/messages",
            json={"choice": choice["id"], "state": question["state"], "label": label},
        )
        assert answer.status_code == 200, answer.text
        self.last = answer.json()
        return self.last

    def question(self) -> dict[str, Any]:
        questions = [m for m in self.last["messages"] if m["type"] == "choices"]
        assert questions, f"no question in {self.texts()}"
        return questions[-1]

    def buttons(self) -> list[str]:
        return [c["label"] for c in self.question()["choices"]]

    def texts(self) -> str:
        return "\n".join(m.get("text") or m.get("title", "") for m in self.last["messages"])

    def finish_the_advice(self) -> None:
        for kind, value in TURNS:
            if kind == "tap":
                self.tap(value)
            else:
                self.say(value)
        assert "あなたのやりがい相談まとめ" in self.texts()

    def give_contact(self) -> None:
        assert "お名前を教えてください" in self.texts()
        self.say("山田 花子")
        self.tap("メール")
        self.say("hanako@@example")
        assert "メールアドレスとして読み取れませんでした" in self.texts()
        self.say("hanako@example.jp")
        assert "https://example.jp/privacy" in self.texts()
        self.tap("同意して登録")


def bookings(app: AgentApp) -> list[dict[str, Any]]:
    answer = app.client.get(
        "/api/v1/bookings", params={"day": "2025-04-01", "days": 14}, headers=app.api("sato")
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def reminders(app: AgentApp, booking_id: int) -> dict[str, Timer | None]:
    store = app.runtime.store
    return {
        hours: app.run(lambda h=hours: store.timer(f"booking_reminder:{booking_id}:{h}"))
        for hours in ("24h", "1h")
    }


def facts_of(app: AgentApp, kind: str) -> list[str | None]:
    """The values of the analytics facts of `kind`, in the order recorded."""

    async def read() -> list[str | None]:
        async with app.runtime.store.engine.connect() as db:
            rows = await db.execute(
                sa.select(facts.c.value).where(facts.c.kind == kind).order_by(facts.c.id)
            )
            return [value for (value,) in rows]

    found: list[str | None] = app.run(read)
    return found


def run_timers(app: AgentApp) -> int:
    done: int = app.run(app.runtime.timers.run_due)
    app.settle()
    return done


def test_a_web_user_books_reschedules_and_cancels(app: AgentApp, clock: FakeClock) -> None:
    user = WebUser(app)
    user.finish_the_advice()
    user.tap("面談を予約する")
    user.give_contact()
    # Evenings and the weekend come first; more behind 「ほかの日時」.
    assert user.buttons() == [
        "4/1（火）18:00",
        "4/1（火）18:30",
        "4/5（土）10:00",
        "ほかの日時",
        "今はやめておく",
    ]
    user.tap("ほかの日時")
    assert user.buttons()[:3] == ["4/1（火）19:00", "4/1（火）19:30", "4/5（土）10:30"]
    user.tap("4/1（火）19:30")
    said = user.texts()
    assert "ご予約を承りました" in said
    assert "4月1日（火）19:30〜20:00" in said and "佐藤" in said
    assert "ビデオ通話 https://meet.example.jp/zcareer" in said
    ics_url = next(w for w in said.split() if w.startswith(f"{PUBLIC_URL}/bookings/"))
    calendar = app.client.get(ics_url.removeprefix(PUBLIC_URL).split("\n")[0])
    assert calendar.status_code == 200
    assert calendar.headers["content-type"].startswith("text/calendar")
    assert "DTSTART:20250401T103000Z" in calendar.text and "STATUS:CONFIRMED" in calendar.text
    assert app.client.get("/bookings/not-a-real-token-at-all.ics").status_code == 404
    [booking] = bookings(app)
    assert (booking["status"], booking["contact_name"], booking["channel"]) == (
        "booked",
        "山田 花子",
        "web",
    )
    assert booking["contact"] == "メール hanako@example.jp"
    # Analytics: the booking is a fact of its own, and the funnel's booking step.
    assert facts_of(app, "booking_made") == [None]
    assert "@booking_made" in facts_of(app, "step")
    # Booked on the day: no reminder the day before, one an hour before.
    first = reminders(app, booking["id"])
    assert first["24h"] is None
    assert first["1h"] is not None and first["1h"].pending
    assert first["1h"].due_at == datetime(2025, 4, 1, 9, 30, tzinfo=UTC)  # 18:30 JST

    # Reschedule: nothing is asked twice (the contact is kept).
    user.say("面談を予約")
    assert "4月1日（火）19:30〜20:00に、佐藤との面談" in user.texts()
    user.tap("日時を変更する")
    assert "お名前" not in user.texts()
    assert "4/1（火）19:30" not in user.buttons()  # the user's own slot is not offered again
    user.tap("4/5（土）10:00")
    assert "4月5日（土）10:00〜10:30" in user.texts()
    assert [(b["when"], b["status"]) for b in bookings(app)] == [
        ("4月1日（火）19:30〜20:00", "cancelled"),
        ("4月5日（土）10:00〜10:30", "booked"),
    ]
    assert facts_of(app, "booking_made") == [None]  # a move is not another booking
    # The old booking's reminder is cancelled; the new one has both.
    old = reminders(app, booking["id"])["1h"]
    assert old is not None and old.cancelled_at is not None
    moved = bookings(app)[1]["id"]
    assert all(t is not None and t.pending for t in reminders(app, moved).values())

    # The fake clock reaches each reminder: said in the chat, once.
    seen = len(app.history(user.session)["messages"])
    clock.set(datetime(2025, 4, 4, 1, 0, tzinfo=UTC))  # Friday 10:00 JST
    assert run_timers(app) == 1
    assert run_timers(app) == 0
    said = [m["text"] for m in app.history(user.session)["messages"][seen:]]
    assert len(said) == 1 and said[0].startswith("面談のご案内です。4月5日（土）10:00〜10:30")
    assert "https://meet.example.jp/zcareer" in said[0]
    clock.set(datetime(2025, 4, 5, 0, 0, tzinfo=UTC))  # Saturday 09:00 JST
    assert run_timers(app) == 1
    assert app.history(user.session)["messages"][-1]["text"].startswith("まもなく面談のお時間です")

    # Cancel.
    user.say("面談を予約")
    user.tap("キャンセルする")
    assert "キャンセルしますか" in user.texts()
    user.tap("キャンセルする")
    assert "面談をキャンセルしました" in user.texts()
    assert [b["status"] for b in bookings(app)] == ["cancelled", "cancelled"]
    cancelled = app.client.get(ics_url.removeprefix(PUBLIC_URL).split("\n")[0])
    assert "STATUS:CANCELLED" in cancelled.text  # calendars that fetch it again drop it
    user.tap("続きから")
    assert "あなたのやりがい相談まとめ" in user.texts()  # back where the booking began


def test_the_loser_of_a_race_is_told_and_offered_other_slots(app: AgentApp) -> None:
    first, second = WebUser(app), WebUser(app)
    for user in (first, second):
        user.say("面談を予約")
        user.give_contact()
    assert first.buttons()[0] == second.buttons()[0] == "4/1（火）18:00"
    first.tap("4/1（火）18:00")
    assert "ご予約を承りました" in first.texts()
    second.tap("4/1（火）18:00")  # the button they were shown before the first booked it
    assert "ほかの方の予約が入りました" in second.texts()
    assert "4/1（火）18:00" not in second.buttons()
    second.tap("4/1（火）18:30")
    assert "ご予約を承りました" in second.texts()
    assert sorted(b["when"] for b in bookings(app) if b["status"] == "booked") == [
        "4月1日（火）18:00〜18:30",
        "4月1日（火）18:30〜19:00",
    ]


def test_contact_details_are_shown_and_changed_without_booking(app: AgentApp) -> None:
    user = WebUser(app)
    user.say("登録情報")
    assert "お名前を教えてください" in user.texts()
    user.say("花子")
    user.tap("電話")
    user.say("03-1234-56")
    assert "電話番号として読み取れませんでした" in user.texts()
    user.say("０９０－１２３４－５６７８")
    user.tap("同意して登録")
    assert "登録しました" in user.texts()
    user.say("登録情報")
    assert "花子" in user.texts() and "電話（090-1234-5678）" in user.texts()
    user.tap("変更する")
    user.say("山田花子")
    user.tap("このチャットで")
    user.tap("同意しない")
    assert "保存していません" in user.texts()
    # Declining a change keeps what was given before.
    user.say("登録情報")
    assert "電話（090-1234-5678）" in user.texts()
    export = app.client.get(f"/api/v1/users/web/{user.session}", headers=app.api("sato"))
    assert export.status_code == 403  # only admins export; the store test covers the content


def test_out_of_hours_a_waiting_user_may_book_or_leave_contact_details(
    app: AgentApp, clock: FakeClock
) -> None:
    clock.advance(timedelta(hours=10))  # Tuesday 20:00 in Tokyo: agents are gone for the day
    user = WebUser(app)
    user.say("担当者と話したい")
    assert user.last["mode"] == "waiting"
    assert "対応時間外" in user.texts()
    assert user.buttons() == ["面談を予約", "連絡先を残す", "ボットに戻る"]

    user.tap("連絡先を残す")
    assert user.last["mode"] == "bot"
    assert "お名前を教えてください" in user.texts()
    user.say("山田花子")
    user.tap("電話")
    user.say("090-1234-5678")
    user.tap("同意して登録")
    assert user.last["mode"] == "waiting"  # back in the queue, with a way to reach them
    [queued] = [h for h in app.desk_queue() if h["status"] == "waiting"]
    detail = app.client.get(f"/api/v1/handoffs/{queued['id']}", headers=app.api("sato"))
    assert detail.json()["summary"]["contact"] == "山田花子・電話 090-1234-5678"

    user.tap("面談を予約")  # nothing asked twice: straight to the slots
    assert user.last["mode"] == "bot"
    assert "お名前" not in user.texts()
    assert user.buttons()[0] == "4/5（土）10:00"  # Tuesday's evening has passed
    user.tap("4/5（土）10:00")
    assert "ご予約を承りました" in user.texts()
    assert [h for h in app.desk_queue() if h["status"] == "waiting"] == []


def test_availability_through_the_api(app: AgentApp) -> None:
    headers = app.api("sato")
    off = app.client.post(
        "/api/v1/availability", json={"kind": "off", "day": "2025-04-05"}, headers=headers
    )
    assert off.status_code == 201 and off.json()["label"] == "2025-04-05 休み"
    late = app.client.post(
        "/api/v1/availability",
        json={"kind": "extra", "day": "2025-04-02", "start": "22:30", "minutes": 120},
        headers=headers,
    )
    assert late.json()["end"] == "23:59"  # clipped at the end of the day
    bad = app.client.post(
        "/api/v1/availability",
        json={"kind": "weekly", "day": "Someday", "start": "18:00", "minutes": 60},
        headers=headers,
    )
    assert bad.status_code == 422
    labels = [r["label"] for r in app.client.get("/api/v1/availability", headers=headers).json()]
    assert "毎週火 18:00-20:00" in labels and "2025-04-05 休み" in labels
    # Saturday off: no Saturday slots are offered.
    user = WebUser(app)
    user.say("面談を予約")
    user.give_contact()
    assert not any(label.startswith("4/5") for label in user.buttons())
    assert "4/12（土）10:00" in user.buttons()  # the next Saturday instead
    removed = app.client.delete(f"/api/v1/availability/{off.json()['id']}", headers=headers)
    assert removed.status_code == 204
    again = app.client.delete(f"/api/v1/availability/{off.json()['id']}", headers=headers)
    assert again.status_code == 404


def test_an_agent_cancels_and_the_user_is_told(app: AgentApp) -> None:
    user = WebUser(app)
    user.say("面談を予約")
    user.give_contact()
    user.tap("4/5（土）10:00")
    [booking] = bookings(app)
    cancelled = app.client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=app.api("sato"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = app.client.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=app.api("sato"))
    assert again.status_code == 404
    assert all(t is not None and t.cancelled_at for t in reminders(app, booking["id"]).values())
    assert run_timers(app) == 1  # the word to the user, due at once
    told = app.history(user.session)["messages"][-1]["text"]
    assert told.startswith("ごめんなさい、4月5日（土）10:00〜10:30の面談は、担当者の都合で")
    user.say("面談を予約")  # no booking any more: the slots again, the contact kept
    assert "4/5（土）10:00" in user.buttons() and "お名前" not in user.texts()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_users_tapping_one_slot_at_once_never_both_get_it(
    tmp_path: Path, clock: FakeClock, backend: str, request: pytest.FixtureRequest
) -> None:
    """Both taps reach the service at once (one process runs such turns one after the other;
    tests/test_booking_store.py races the INSERTs themselves on both backends)."""
    overrides: dict[str, Any] = dict(SETTINGS)
    if backend == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_database")
    with agent_app(tmp_path, runtime_clock=clock, **overrides) as app:
        app.add_agent("sato", "佐藤")
        added = app.client.post(
            "/api/v1/availability",
            json={"kind": "weekly", "day": "Tue", "start": "18:00", "minutes": 60},
            headers=app.api("sato"),
        )
        assert added.status_code == 201
        users = [WebUser(app) for _ in range(2)]
        for user in users:
            user.say("面談を予約")
            user.give_contact()
        slot = next(c for c in users[0].question()["choices"] if c["label"] == "4/1（火）18:00")
        tap = ChoiceIn(choice=slot["id"], state="booking", label=slot["label"])
        service = app.runtime.service

        async def both() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(
                        service.handle(ConversationKey(channel=Channel.WEB, address=u.session), tap)
                        for u in users
                    )
                )
            )

        replies = app.run(both)
        said = ["\n".join(m.text for m in r.messages if hasattr(m, "text")) for r in replies]
        assert sum("ご予約を承りました" in s for s in said) == 1, said
        assert sum("ほかの方の予約が入りました" in s for s in said) == 1, said
        loser = next(r for r, s in zip(replies, said, strict=True) if "ほかの方" in s)
        offered = [c.label for c in loser.messages[-1].choices]
        assert "4/1（火）18:00" not in offered and "4/1（火）18:30" in offered
        booked = [b for b in bookings(app) if b["status"] == "booked"]
        assert len(booked) == 1
