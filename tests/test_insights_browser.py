"""/console/insights in a real browser (Playwright, chromium; the app under uvicorn) over seeded
runs with known figures: the funnel, drop-off and A/B verdict on the page, the SVG charts, a
table's CSV download; an agent who is not admin is refused. Screenshot: docs/insights.png."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from agent_app import PASSWORD, password_hash
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium, screenshot_path
from insights_seed import seed

from bot.config import Settings
from bot.store import AgentStore, SqlStore

require_chromium()
sync_api = pytest.importorskip("playwright.sync_api")
SCREENSHOT: Final = screenshot_path("insights.png")


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

    async def prepare() -> None:
        store = await SqlStore.open(database)
        try:
            agents = AgentStore(engine=store.engine)
            hashed = password_hash()
            await agents.add("boss", password_hash=hashed, display_name="管理 者", admin=True)
            await agents.add("hanako", password_hash=hashed, display_name="山田 花子")
            await seed(store.engine)
        finally:
            await store.close()

    asyncio.run(prepare())
    with ServedApp(settings) as url:
        yield url


def sign_in(page: object, served: str, name: str) -> None:
    page.goto(f"{served}/console")  # type: ignore[attr-defined]
    page.get_by_label("名前").fill(name)  # type: ignore[attr-defined]
    page.get_by_label("パスワード").fill(PASSWORD)  # type: ignore[attr-defined]
    page.get_by_role("button", name="ログイン").click()  # type: ignore[attr-defined]


def cells(page: object, table: str) -> list[list[str]]:
    rows = page.locator(f'table[data-table="{table}"] tbody tr')  # type: ignore[attr-defined]
    return [
        [c.strip() for c in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def test_an_admin_reads_the_funnel_ab_test_and_downloads_csv(served: str) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, locale="ja-JP", timezone_id="Asia/Tokyo"
            )
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect
            sign_in(page, served, "boss")
            expect(page.get_by_role("heading", name="相談の受付")).to_be_visible()
            page.get_by_role("link", name="分析").click()
            expect(page.get_by_role("heading", name="分析", exact=True)).to_be_visible()

            funnel = cells(page, "funnel")
            assert [(row[0], row[1]) for row in funnel] == [
                ("開始", "20"),
                ("職種", "19"),
                ("モヤモヤ", "18"),
                ("相性チェック完了", "15"),
                ("アドバイス", "14"),
                ("まとめ", "11"),
                ("担当者を希望", "6"),
                ("担当者と会話", "4"),
                ("面談予約", "0"),
            ]
            assert funnel[5][2:] == ["78.6%", "55.0%"]
            # The chart is a picture of the same figures.
            bars = page.locator("#funnel-chart svg rect")
            expect(bars).to_have_count(9)
            expect(page.locator("#funnel-chart svg")).to_contain_text("11（55.0%）")
            expect(page.locator("#daily-chart svg polyline")).to_have_count(2)

            dropoff = {
                row[0].rsplit("（", 1)[1].rstrip("）"): row[1:] for row in cells(page, "dropoff")
            }
            assert dropoff["ask_role"] == ["1", "5.0%", "5.0"]
            assert dropoff["fit_start"][0] == "3" and dropoff["ways"][0] == "3"

            expect(page.locator("#ab-verdict")).to_contain_text("有意な差があります")
            assert [row[:4] for row in cells(page, "ab")] == [
                ["a", "10", "3", "30.0%"],
                ["b", "10", "8", "80.0%"],
            ]
            assert cells(page, "outcomes")[:4] == [
                ["面談予約済み", "2"], ["情報提供のみ", "1"], ["見送り", "0"], ["要フォロー", "1"]
            ]  # fmt: skip

            # Compare on another step: not significant yet, and the page says so.
            page.get_by_label("A/Bで比べる段階").select_option("role")
            page.get_by_role("button", name="表示").click()
            expect(page.locator("#ab-verdict")).to_contain_text("差はまだ有意ではありません")
            page.get_by_label("A/Bで比べる段階").select_option("summary")
            page.get_by_role("button", name="表示").click()
            expect(page.locator("#ab-verdict")).to_contain_text("有意な差があります")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")

            # The funnel table as CSV, the same figures.
            with page.expect_download() as download:
                page.locator("#table-funnel a.csv").click()
            text = Path(download.value.path()).read_text(encoding="utf-8-sig")
            rows = list(csv.reader(io.StringIO(text)))
            assert rows[0] == ["段階", "件数", "前の段階から", "開始から"]
            assert rows[1:3] == [["開始", "20", "", "100.0%"], ["職種", "19", "95.0%", "95.0%"]]
            assert download.value.suggested_filename.startswith("career-funnel-")

            # One channel only.
            page.get_by_label("チャネル").select_option("line")
            page.get_by_role("button", name="表示").click()
            expect(page.locator('table[data-table="funnel"] tbody tr').first).to_contain_text("5")
            context.close()

            # An agent who is not an admin sees no link and is refused.
            other = browser.new_context(locale="ja-JP")
            page = other.new_page()
            page.set_default_timeout(WAIT_MS)
            sign_in(page, served, "hanako")
            expect(page.get_by_role("heading", name="相談の受付")).to_be_visible()
            expect(page.get_by_role("link", name="分析")).to_have_count(0)
            answer = page.request.get(f"{served}/console/insights")
            assert answer.status == 403
            assert page.request.get(f"{served}/console/insights/funnel.csv").status == 403
            other.close()
        finally:
            browser.close()
