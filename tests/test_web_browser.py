"""The web chat page in a real browser: taps, typing, the multi-select, the summary card.

Debian's chromium driven by Playwright against the real app under uvicorn; the screenshot goes
to docs/web-chat.png with UPDATE_SCREENSHOT=1. Skips when chromium is absent, except under CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium, screenshot_path

from bot.config import Settings

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

            # Reloading the page keeps the conversation (the session lives in sessionStorage).
            page.reload()
            expect(page.locator(".bubble.me").first).to_have_text("経理")
            expect(page.locator(".bubble.bot").last).to_contain_text("（1/8）")
            expect(page.get_by_role("button", name="人事")).to_be_disabled()
            expect(page.get_by_role("button", name="当てはまる").last).to_be_enabled()
            page.screenshot(path=str(screenshot_path("web-chat.png")), full_page=False)
        finally:
            browser.close()


@pytest.fixture
def bookable(tmp_path: Path) -> Iterator[str]:
    """The app with an agent who takes consultations every day, 09:00-21:00 (real time)."""
    import asyncio

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
