"""The web chat at a phone's size (390×844): short turns, readable bubbles, the right scroll.

Every turn of a whole conversation (typed and tapped, the leaver path) adds at most 3 bot
bubbles or cards, no text bubble is longer than 180 characters, a reply is scrolled so its
first bubble is in view (not only its last), and a typing indicator shows while the bot is
thinking. Debian's chromium driven by Playwright; skips when chromium is absent, except under CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium
from career_path import TURNS

from bot.config import Settings

require_chromium()
sync_api = pytest.importorskip("playwright.sync_api")

PHONE = {"width": 390, "height": 844}
MAX_BUBBLES = 3
MAX_CHARS = 180
HEADER = 64  # the sticky header's height (px) that `scroll-margin-top` keeps clear


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", flows_dir=ROOT / "flows"
    )
    with ServedApp(settings) as url:
        yield url


def bot_items(page: Any) -> Any:
    """Bot bubbles and cards (a question's buttons belong to its bubble)."""
    return page.locator("#log > .bubble.bot:not(.typing), #log > .card")


def test_a_whole_conversation_fits_a_phone(served: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport=PHONE, locale="ja-JP", has_touch=True)
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            page.goto(served)
            expect(page.locator(".choices button").first).to_be_visible()
            seen = bot_items(page).count()
            assert seen <= MAX_BUBBLES
            for number, (kind, value) in enumerate(TURNS, 1):
                mine = page.locator(".bubble.me").count()
                if kind == "tap":
                    page.get_by_role("button", name=value, exact=True).last.click()
                else:
                    page.get_by_label("メッセージ").fill(value)
                    page.get_by_role("button", name="送信").click()
                expect(page.locator(".bubble.me")).to_have_count(mine + 1)
                expect(page.locator("#typing")).to_have_count(0)
                total = bot_items(page).count()
                new = total - seen
                where = f"turn {number} ({value})"
                assert 1 <= new <= MAX_BUBBLES, f"{where}: {new} bubbles"
                for i in range(seen, total):
                    item = bot_items(page).nth(i)
                    if "card" in (item.get_attribute("class") or ""):
                        continue
                    text = item.inner_text()
                    assert len(text) <= MAX_CHARS, f"{where}: {len(text)} characters: {text}"
                # The reply's first bubble is in view, just under the header.
                top = bot_items(page).nth(seen).bounding_box()
                assert top is not None
                assert HEADER - 8 <= top["y"] <= PHONE["height"] - 40, f"{where}: first at {top}"
                seen = total
            expect(page.locator(".card h3").last).to_have_text("あなたのやりがい相談まとめ")
            expect(page.locator(".card").last).to_contain_text("向いていそうな仕事")
        finally:
            browser.close()


def test_a_typing_indicator_shows_while_the_bot_thinks(served: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport=PHONE, locale="ja-JP")
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            page.goto(served)
            expect(page.locator(".choices button").first).to_be_visible()

            def slow(route: Any) -> None:
                page.wait_for_timeout(600)
                route.continue_()

            page.route("**/messages", slow)
            page.get_by_role("button", name="経理", exact=True).click()
            expect(page.locator("#typing")).to_be_visible()
            expect(page.locator("#typing")).to_have_attribute("aria-label", "入力中")
            expect(page.locator(".bubble.bot").last).to_contain_text("やりがいを感じにくいのは")
            expect(page.locator("#typing")).to_have_count(0)
        finally:
            browser.close()
