"""The web chat page in a real browser: taps, typing, the multi-select, the summary card.

Debian's chromium driven by Playwright against the real app under uvicorn; the screenshot goes
to docs/web-chat.png with UPDATE_SCREENSHOT=1. Skips when chromium is absent, except under CI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium, screenshot_path

from bot.config import Settings
from bot.models import Channel
from bot.records import Timer
from bot.store import SqlStore
from bot.store.schema import conversations

require_chromium()
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", flows_dir=ROOT / "flows"
    )
    with ServedApp(settings) as url:
        yield url


def test_a_user_talks_through_the_page_by_taps_and_typing(served: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 420, "height": 860}, locale="ja-JP")
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            page.goto(served)

            expect(page.locator(".bubble.bot").first).to_contain_text("やりがい相談")
            page.get_by_role("button", name="経理").click()
            expect(page.locator(".bubble.me").last).to_have_text("経理")
            # Buttons of an answered question can no longer be pressed.
            expect(page.get_by_role("button", name="人事")).to_be_disabled()

            page.get_by_role("button", name="毎日同じことの繰り返し").click()
            expect(page.get_by_role("button", name="✓ 毎日同じことの繰り返し")).to_be_visible()
            page.get_by_label("メッセージ").fill("誰にも評価されないのもつらい")
            page.get_by_role("button", name="送信").click()
            expect(page.get_by_role("button", name="✓ 評価されていない")).to_be_visible()
            page.get_by_role("button", name="これで全部").last.click()

            card = page.locator(".card").first
            expect(card.locator("h3")).to_be_visible()
            expect(card).to_contain_text("毎日同じことの繰り返し")
            expect(page.locator(".bubble.bot").last).to_contain_text("（1/8）")

            # Reloading the page keeps the conversation (the session lives in localStorage).
            page.reload()
            expect(page.locator(".bubble.me").first).to_have_text("経理")
            expect(page.locator(".bubble.bot").last).to_contain_text("（1/8）")
            expect(page.get_by_role("button", name="人事")).to_be_disabled()
            expect(page.get_by_role("button", name="当てはまる").last).to_be_enabled()
            page.screenshot(path=str(screenshot_path("web-chat.png")), full_page=False)
        finally:
            browser.close()


T = TypeVar("T")
CHECKIN = "その後、お仕事の小さな工夫は試せましたか？"


def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end in a thread of its own (Playwright's sync API holds an event
    loop in this one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _bring_forward(database: str) -> str:
    """The web user's follow-up, due now (as if its three days had passed); its key."""
    import sqlalchemy as sa

    store = await SqlStore.open(database)
    try:
        async with store.engine.connect() as connection:
            cid = await connection.scalar(
                sa.select(conversations.c.id).where(conversations.c.channel == Channel.WEB.value)
            )
        [timer] = [t for t in await store.timers_of(cid) if t.pending]
        await store.schedule_timer(
            timer.key,
            kind=timer.kind,
            conversation_id=cid,
            due_at=datetime.now(UTC),
            payload=timer.payload,
        )
        return timer.key
    finally:
        await store.close()


async def _timer(database: str, key: str) -> Timer | None:
    store = await SqlStore.open(database)
    try:
        return await store.timer(key)
    finally:
        await store.close()


def test_the_chat_outlives_the_tab_and_shows_what_came_while_it_was_closed(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    # On the real clock: with the default quiet hours (21:00-09:00 in Tokyo) the check-in
    # would wait for the morning whenever the test runs at night in Japan.
    settings = Settings(database_url=database, flows_dir=ROOT / "flows", quiet_hours="")
    with ServedApp(settings) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 420, "height": 860}, locale="ja-JP")
            expect = sync_api.expect
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            page.get_by_role("button", name="経理").click()
            expect(page.locator(".bubble.me").last).to_have_text("経理")
            page.get_by_label("メッセージ").fill("配信再開")
            page.get_by_role("button", name="送信").click()
            expect(page.locator(".bubble.bot").last).to_contain_text(
                "どんなところですか"
            )  # asked again
            expect(page.locator(".bubble.bot", has_text="配信を再開しました")).to_be_visible()
            session = page.evaluate("localStorage.getItem('yarigai-session')")
            assert session
            page.close()  # the tab is closed; the chat is not

            key = _in_thread(_bring_forward(database))
            deadline = time.monotonic() + 20
            while True:  # the background jobs look for due timers every few seconds
                fired = _in_thread(_timer(database, key))
                if fired is not None and fired.outcome == "sent":
                    break
                assert time.monotonic() < deadline, "the follow-up did not fire"
                time.sleep(0.2)

            again = context.new_page()  # a new tab, later
            again.set_default_timeout(WAIT_MS)
            again.goto(url)
            expect(again.locator(".bubble.me").first).to_have_text("経理")
            expect(again.locator(".bubble.bot").last).to_contain_text(CHECKIN)
            expect(again.get_by_role("button", name="人事")).to_be_disabled()
            answer = again.get_by_role("button", name="まだこれから")
            expect(answer).to_be_enabled()
            answer.click()
            expect(again.locator(".bubble.bot", has_text="焦らなくていいですよ")).to_be_visible()
            assert again.evaluate("localStorage.getItem('yarigai-session')") == session
        finally:
            browser.close()


@pytest.fixture
def bookable(tmp_path: Path) -> Iterator[str]:
    """The app with an agent who takes consultations every day, 09:00-21:00 (real time)."""
    from agent_app import password_hash

    from bot.booking.slots import parse_rule
    from bot.store import AgentStore, BookingStore, SqlStore

    database = f"sqlite:///{tmp_path / 'db.sqlite'}"

    async def add_agent() -> None:
        store = await SqlStore.open(database)
        try:
            agent = await AgentStore(engine=store.engine).add(
                "sato", password_hash=password_hash(), display_name="佐藤"
            )
            bookings = BookingStore(engine=store.engine)
            for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"):
                await bookings.add_rule("sato", parse_rule(agent.id, "weekly", day, "09:00-21:00"))
        finally:
            await store.close()

    asyncio.run(add_agent())
    settings = Settings(
        database_url=database,
        flows_dir=ROOT / "flows",
        public_holidays=False,
        public_url="https://yarigai.example.jp",
        meeting_url="https://meet.example.jp/zcareer",
        privacy_policy_url="https://example.jp/privacy",
    )
    with ServedApp(settings) as url:
        yield url


def test_a_user_books_a_consultation_in_the_page(bookable: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 420, "height": 860}, locale="ja-JP")
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            page.goto(bookable)
            expect(page.locator(".bubble.bot").first).to_contain_text("やりがい相談")

            def send(text: str) -> None:
                page.get_by_label("メッセージ").fill(text)
                page.get_by_role("button", name="送信").click()
                expect(page.locator(".bubble.me").last).to_have_text(text)

            send("面談を予約")
            expect(page.locator(".bubble.bot").last).to_contain_text("お名前を教えてください")
            send("山田 花子")
            page.get_by_role("button", name="このチャットで").last.click()
            expect(page.locator(".bubble.bot").last).to_contain_text("https://example.jp/privacy")
            page.get_by_role("button", name="同意して登録").last.click()
            expect(page.get_by_role("button", name="ほかの日時").last).to_be_visible()
            slot = page.locator(".choices").last.locator("button").first
            label = slot.inner_text()
            slot.click()
            expect(page.locator(".bubble.me").last).to_have_text(label)
            confirmation = page.locator(".bubble.bot", has_text="ご予約を承りました")
            expect(confirmation).to_have_count(1)
            expect(confirmation).to_contain_text("担当: 佐藤")
            expect(confirmation).to_contain_text("https://yarigai.example.jp/bookings/")
            assert len(confirmation.inner_text()) <= 180  # a phone screen's worth, link included
            page.screenshot(path=str(screenshot_path("booking.png")), full_page=False)
        finally:
            browser.close()
