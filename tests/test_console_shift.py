"""A shift in the console, in a real browser (Debian's chromium, Playwright; the real app under
uvicorn): several requests arrive with briefs and a notification, agents filter the queue and
see who wrote last, an admin keeps saved replies and an agent sends one, a request is handed
back with its outcome and found again in the history. Screenshots: docs/console-queue.png and
docs/console-brief.png (with UPDATE_SCREENSHOT=1).

Skips (with the reason shown) when chromium is not installed, except under CI=true."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from agent_app import PASSWORD, password_hash
from browser import ARGS, CHROMIUM, ROOT, WAIT_MS, ServedApp, require_chromium, screenshot_path

from bot.config import Settings
from bot.http.console.auth import new_token
from bot.store import AgentStore, SqlStore

require_chromium()
sync_api = pytest.importorskip("playwright.sync_api")
QUEUE_SHOT: Final = screenshot_path("console-queue.png")
BRIEF_SHOT: Final = screenshot_path("console-brief.png")

# Records what the page asks of the browser's notifications and sound, so the test can see
# them: the page's own code runs unchanged, these only count.
SPY: Final = """
window.__notes = [];
window.__chimes = 0;
const RealNotification = window.Notification;
class CountedNotification extends RealNotification {
  constructor(title, options) { super(title, options); window.__notes.push({ title, body: options && options.body }); }
}
Object.defineProperty(CountedNotification, "permission", { get: () => RealNotification.permission });
CountedNotification.requestPermission = (...args) => RealNotification.requestPermission(...args);
window.Notification = CountedNotification;
const oscillator = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () { window.__chimes += 1; return oscillator.call(this); };
"""

KEIRI: Final = ["経理で3年目", "毎日同じことの繰り返し", "これで全部"]
KEIRI += ["いいえ", "はい", "いいえ", "はい", "いいえ", "はい", "いいえ", "はい"]
KEIRI += ["今の職場で工夫したい", "来月に面接があって不安です"]
JINJI: Final = ["人事です", "評価されていない", "これで全部"]
JINJI += ["はい", "いいえ", "はい", "いいえ", "はい", "いいえ", "はい", "いいえ"]
JINJI += ["転職も考えたい"]
SOUMU: Final = ["総務"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app's URL, and an API token of a second agent (太郎) working the same queue."""
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings = Settings(
        database_url=database,
        flows_dir=ROOT / "flows",
        default_flow="career",
        agent_hours="always",
        agency_name="Zキャリア",
        session_secret="browser-test",
    )
    token, hashed = new_token()

    async def add_agents() -> None:
        store = await SqlStore.open(database)
        try:
            agents = AgentStore(engine=store.engine)
            await agents.add(
                "hanako", password_hash=password_hash(), display_name="山田 花子", admin=True
            )
            await agents.add("taro", password_hash=password_hash(), display_name="佐藤 太郎")
            await agents.add_token("taro", token_hash=hashed, label="test")
        finally:
            await store.close()

    asyncio.run(add_agents())
    with ServedApp(settings) as url:
        yield url, token


def ask_for_an_agent(user: httpx.Client, answers: list[str]) -> str:
    """A web chat user who answers, then asks for a person; returns the session."""
    session: str = user.post("/api/chat/sessions", json={}).json()["session"]
    for text in [*answers, "担当者と話したい"]:
        said = user.post(f"/api/chat/sessions/{session}/messages", json={"text": text})
        assert said.status_code == 200, said.text
    assert said.json()["mode"] == "waiting"
    return session


def agent_lines(user: httpx.Client, session: str) -> list[str]:
    history: dict[str, Any] = user.get(f"/api/chat/sessions/{session}/messages").json()
    return [m["text"] for m in history["messages"] if m["sender"] == "agent"]


def test_agents_work_a_queue_with_briefs_notifications_saved_replies_and_history(
    served: tuple[str, str],
) -> None:
    url, taro = served
    user = httpx.Client(base_url=url, timeout=20)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900},
                locale="ja-JP",
                timezone_id="Asia/Tokyo",
                device_scale_factor=1,
            )
            context.grant_permissions(["notifications"], origin=url)
            context.add_init_script(SPY)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            expect = sync_api.expect

            page.goto(f"{url}/console")
            page.get_by_label("名前").fill("hanako")
            page.get_by_label("パスワード").fill(PASSWORD)
            page.get_by_role("button", name="ログイン").click()
            expect(page.get_by_role("heading", name="相談の受付")).to_be_visible()

            # The admin keeps the saved replies; an unknown variable is refused, the draft kept.
            page.get_by_role("link", name="定型文").click()
            page.locator("#reply-name").fill("挨拶")
            page.locator("#reply-body").fill("{{user}}さん、こんにちは")
            page.locator("#reply-save").click()
            expect(page.locator("#reply-error")).to_contain_text("使えない変数があります: user")
            expect(page.locator("#reply-body")).to_have_value("{{user}}さん、こんにちは")
            page.locator("#reply-body").fill(
                "担当の{{name}}です。{{role}}のお仕事のこと、{{agency}}が一緒に考えます。"
            )
            page.locator("#reply-save").click()
            expect(page.locator("#replies")).to_contain_text("!挨拶")

            # Opt in to notifications, then requests arrive: a chime and a notification each.
            page.get_by_role("link", name="受付").click()
            expect(page.locator("#notify")).to_have_text("通知を受け取る")
            page.locator("#notify").click()
            expect(page.locator("#notify")).to_have_text("通知: オン")
            keiri = ask_for_an_agent(user, KEIRI)
            jinji = ask_for_an_agent(user, JINJI)
            soumu = ask_for_an_agent(user, SOUMU)
            items = page.locator("#queue li")
            expect(items).to_have_count(3)
            expect(page).to_have_title("(3) 相談の受付 | yarigai")
            page.wait_for_function("window.__notes.length >= 3")
            notes = page.evaluate("window.__notes")
            assert any(
                "経理（3年目）" in n["body"] and "「来月に面接があって不安です」" in n["body"]
                for n in notes
            ), notes
            assert page.evaluate("window.__chimes") > 0

            # Longest waiting first, each with its brief; a user's new words mark it unread.
            expect(items.nth(0)).to_contain_text(
                "経理（3年目） ／ 毎日同じことの繰り返し ／ 相性: かなり良い ／ 今の職場で工夫したい"
            )
            expect(items.nth(1)).to_contain_text(
                "人事 ／ 評価されていない ／ 相性: ほかの道も合いそう"
            )
            user.post(
                f"/api/chat/sessions/{jinji}/messages",
                json={"text": "面接の練習もお願いできますか？"},
            )
            expect(items.nth(1)).to_contain_text("面接の練習もお願いできますか？")
            expect(items.nth(1)).to_have_class("item waiting unread")

            # Another agent takes one (through the API): the filters tell mine from unclaimed.
            soumu_id = int(items.nth(2).get_attribute("data-id") or 0)
            claimed = user.post(
                f"/api/v1/handoffs/{soumu_id}/claim", headers={"Authorization": f"Bearer {taro}"}
            )
            assert claimed.status_code == 200, claimed.text
            chat = user.get(f"/api/chat/sessions/{soumu}/messages").json()
            assert (chat["mode"], chat["status"]) == ("agent", "担当者と話しています")
            expect(items.nth(2)).to_contain_text("担当: 佐藤 太郎")
            expect(page).to_have_title("(2) 相談の受付 | yarigai")
            page.get_by_role("link", name="未対応").click()
            expect(page.locator("#queue li:visible")).to_have_count(2)
            page.get_by_role("link", name="自分の担当").click()
            expect(page.locator("#queue li:visible")).to_have_count(0)
            expect(page.locator("#empty")).to_be_visible()
            page.get_by_role("link", name="すべて").click()
            expect(page.locator("#queue li:visible")).to_have_count(3)
            page.locator("#toast").evaluate("node => { node.hidden = true; }")
            page.screenshot(path=str(QUEUE_SHOT), animations="disabled")

            # The request opens with its brief; answers by short labels, no slot keys.
            items.nth(0).locator("a").click()
            expect(page.locator(".brief-line")).to_have_text(
                "経理（3年目） ／ 毎日同じことの繰り返し ／ 相性: かなり良い ／ 今の職場で工夫したい"
            )
            expect(page.locator(".brief .asked")).to_have_text("「来月に面接があって不安です」")
            expect(page.locator("#waited")).to_have_text("待ち時間: 1分未満")
            expect(page.locator("#answers")).to_contain_text("職種")
            expect(page.locator("#answers")).not_to_contain_text("まず、いまのお仕事")
            expect(page.locator("#facts")).to_contain_text("向いている特徴 4/4")
            summary = page.locator("aside.summary").inner_text()
            for key in ("fit_minus", "m_improve", "lean", "q_spotlight"):
                assert key not in summary

            # Take it, pick the saved reply (filled in for this user), send it.
            page.locator("#claim").click()
            expect(page.locator("#send")).to_be_visible()
            expect(page.locator("#waited")).to_contain_text("依頼")
            page.locator("#canned").select_option("挨拶")
            greeting = "担当の山田 花子です。経理のお仕事のこと、Zキャリアが一緒に考えます。"
            expect(page.locator("#text")).to_have_value(greeting)
            page.locator("#send").click()
            expect(page.locator("#lines li.agent").last).to_contain_text(greeting)
            assert agent_lines(user, keiri) == [greeting]
            page.locator("#toast").evaluate("node => { node.hidden = true; }")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(BRIEF_SHOT), animations="disabled")

            # Hand back with the outcome: the page says so at once.
            page.locator("#outcome").select_option(label="面談予約済み")
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("#release").click()
            expect(page.locator("#closed-status")).to_have_text("ボットに戻した・面談予約済み")
            expect(page.locator("#release")).to_be_hidden()

            # The history finds it by outcome and agent.
            page.get_by_role("link", name="履歴").click()
            expect(page.locator("#history tbody tr[data-id]")).to_have_count(1)
            expect(page.locator("#history")).to_contain_text("面談予約済み")
            page.locator("#outcome-filter").select_option(label="見送り")
            page.locator("#search-go").click()
            expect(page.locator("#history tbody tr[data-id]")).to_have_count(0)
            page.locator("#outcome-filter").select_option(label="面談予約済み")
            page.locator("#who").select_option(label="山田 花子")
            page.locator("#search-go").click()
            expect(page.locator("#history tbody tr[data-id]")).to_have_count(1)
            context.close()
        finally:
            browser.close()
            user.close()
