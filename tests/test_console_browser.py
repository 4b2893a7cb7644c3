"""The agent console in a real browser: Debian's chromium driven by Playwright, the real app
under uvicorn. An agent signs in, sees a handoff arrive live, takes over, replies, sees the
user's answer arrive, and hands back; the screenshot goes to docs/console.png.

Skips (with the reason shown) when chromium is not installed, except under CI=true."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from agent_app import PASSWORD, password_hash
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium, screenshot_path

from bot.config import Settings
from bot.store import AgentStore, SqlStore

require_chromium()
sync_api = pytest.importorskip("playwright.sync_api")
SCREENSHOT: Final = screenshot_path("console.png")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings = Settings(
        database_url=database,
        flows_dir=ROOT / "flows",
        default_flow="career",
        agent_hours="always",
        session_secret="browser-test",
    )

    async def add_agent() -> None:
        store = await SqlStore.open(database)
        try:
            agents = AgentStore(engine=store.engine)
            await agents.add("hanako", password_hash=password_hash(), display_name="山田 花子")
        finally:
            await store.close()

    asyncio.run(add_agent())
    with ServedApp(settings) as url:
        yield url


def chat(client: httpx.Client, session: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/api/chat/sessions/{session}/messages", json=body)
    assert answer.status_code == 200, answer.text
    reply: dict[str, Any] = answer.json()
    return reply


def test_agent_signs_in_sees_a_handoff_live_takes_over_replies_and_hands_back(served: str) -> None:
    user = httpx.Client(base_url=served, timeout=10)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 860},
                locale="ja-JP",
                timezone_id="Asia/Tokyo",
                device_scale_factor=1,
            )
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect

            # Sign in.
            page.goto(f"{served}/console")
            expect(page.get_by_role("heading", name="担当者ログイン")).to_be_visible()
            page.get_by_label("名前").fill("hanako")
            page.get_by_label("パスワード").fill(PASSWORD)
            page.get_by_role("button", name="ログイン").click()
            expect(page.get_by_role("heading", name="相談の受付")).to_be_visible()
            expect(page.locator("#empty")).to_be_visible()
            expect(page.locator("#live")).to_have_text("● ライブ")

            # A web chat user talks to the bot, then asks for a person: it arrives live.
            session = user.post("/api/chat/sessions", json={}).json()["session"]
            for text in ("経理をしています", "毎日同じことの繰り返し", "これで全部"):
                chat(user, session, text=text)
            asked = chat(user, session, text="担当者と話したい")
            assert asked["mode"] == "waiting"
            item = page.locator("#queue li.waiting")
            expect(item).to_have_count(1)
            expect(item).to_contain_text("経理")
            expect(page.locator("#count-waiting")).to_have_text("1")

            # Take over.
            item.locator("a").click()
            expect(page.locator("#claim")).to_be_visible()
            expect(page.locator(".answers")).to_contain_text("経理")
            page.locator("#claim").click()
            expect(page.locator("#status")).to_have_text("対応中（山田 花子）")
            expect(page.locator("#send")).to_be_visible()

            # Reply: it shows in the thread and reaches the user's web chat.
            page.locator("#text").fill(
                "担当の山田です。毎日の繰り返し、つらいですよね。少しお話を聞かせてください。"
            )
            page.locator("#send").click()
            expect(page.locator("#lines li.agent").last).to_contain_text("担当の山田です")
            expect(page.locator("#text")).to_have_value("")
            history = user.get(f"/api/chat/sessions/{session}/messages", params={"after": 0}).json()
            assert history["mode"] == "agent"
            assert history["messages"][-1]["sender"] == "agent"

            # The user's answer appears live; an internal note stays internal.
            chat(
                user, session, text="ありがとうございます。経理の経験を活かして転職も考えています。"
            )
            expect(page.locator("#lines li.user").last).to_contain_text("転職も考えています")
            page.locator("#text").fill("転職意向あり。簿記2級を持っているか次回確認。")
            page.locator("#note").click()
            expect(page.locator("#lines li.note").last).to_contain_text("簿記2級")
            page.locator("#lines").evaluate("node => { node.scrollTop = node.scrollHeight; }")
            page.locator("#toast").evaluate("node => { node.hidden = true; }")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), animations="disabled")

            # Hand back: the bot resumes and tells the user.
            page.locator("#outcome").select_option("follow_up")
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("#release").click()
            expect(page.locator("#status")).to_have_text(re.compile("ボットに戻した"))
            # At once, not after a reload: the closed state and the outcome chosen.
            expect(page.locator("#closed-status")).to_have_text("ボットに戻した・要フォロー")
            expect(page.locator("#lines li.bot").last).to_contain_text("おかえりなさい")
            back = user.get(f"/api/chat/sessions/{session}/messages", params={"after": 0}).json()
            assert back["mode"] == "bot"
            assert "転職意向あり" not in str(back["messages"])
            context.close()
        finally:
            browser.close()
            user.close()


def test_agent_publishes_hours_sees_a_booking_and_cancels_it(served: str) -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    tomorrow = (datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo")) + timedelta(days=1)).date()
    user = httpx.Client(base_url=served, timeout=10)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="ja-JP")
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            page.goto(f"{served}/console")
            page.get_by_label("名前").fill("hanako")
            page.get_by_label("パスワード").fill(PASSWORD)
            page.get_by_role("button", name="ログイン").click()
            page.get_by_role("link", name="面談の予約").click()
            expect(page.get_by_role("heading", name="あなたの面談可能な時間")).to_be_visible()

            # Extra hours tomorrow (a bad day first: said, nothing added).
            page.get_by_label("種類").select_option("extra")
            page.get_by_label("曜日か日付").fill("someday")
            page.get_by_label("時間").fill("10:00-12:00")
            page.get_by_role("button", name="追加する").click()
            expect(page.locator("#toast")).to_contain_text("入力を確かめてください")
            page.get_by_label("種類").select_option("extra")
            page.get_by_label("曜日か日付").fill(tomorrow.isoformat())
            page.get_by_label("時間").fill("10:00-12:00")
            page.get_by_role("button", name="追加する").click()
            expect(page.locator("#availability")).to_contain_text(
                f"{tomorrow.isoformat()} 追加 10:00-12:00"
            )

            # A web chat user books the first slot.
            session = user.post("/api/chat/sessions", json={}).json()["session"]
            chat(user, session, text="面談を予約")
            chat(user, session, text="山田 花子")
            chat(user, session, choice="bk:chat", state="booking")
            offered = chat(user, session, choice="bk:agree", state="booking")
            first = offered["messages"][-1]["choices"][0]
            assert first["label"].startswith(f"{tomorrow.month}/{tomorrow.day}（")
            booked = chat(user, session, choice=first["id"], state="booking")
            assert any("ご予約を承りました" in (m.get("text") or "") for m in booked["messages"])

            # The agent sees it on tomorrow's list, and cancels it.
            page.goto(f"{served}/console/bookings?day={tomorrow.isoformat()}")
            item = page.locator("#bookings li.booking")
            expect(item).to_have_count(1)
            expect(item).to_contain_text("山田 花子")
            expect(item).to_contain_text("10:00〜10:30")
            expect(page.locator("#bookings h2")).to_have_text("山田 花子")  # the agent's name
            item.get_by_role("button", name="キャンセルする").click()
            expect(page.locator("#toast")).to_contain_text("予約をキャンセルしました")
            expect(page.locator("#bookings li.booking.cancelled")).to_have_count(1)
            again = chat(user, session, text="面談を予約")
            assert "お名前" not in str(again["messages"])  # no booking, contact kept
            assert again["messages"][-1]["choices"][0]["label"] == first["label"]
        finally:
            browser.close()
            user.close()
