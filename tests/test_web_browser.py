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
