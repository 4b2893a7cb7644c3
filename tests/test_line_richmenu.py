"""`yarigai line richmenu apply` against the fake LINE API (menus on the API host, the image on
the data host, every request checked against LINE's spec and documented limits): the menu is
created with its image and made the default, running it again leaves one menu of ours, a failed
upload leaves nothing half-made; and each tile's postback is understood by the flow."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes.clock import FakeClock
from fakes.line_api import ACCESS_TOKEN, FakeLineApi, Webhooks, new_user_id, require_spec
from fakes.served import serving_app
from PIL import Image
from test_line import FAST_RETRIES, line_settings
from test_timers import Served

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.channels.line.richmenu import MENU
from bot.channels.line.richmenu_image import find_cjk_font
from bot.cli.main import main
from bot.http.app import create_app


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api


@pytest.fixture
def env(fake: FakeLineApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", ACCESS_TOKEN)
    monkeypatch.setenv("LINE_API_BASE_URL", fake.url)
    monkeypatch.setenv("LINE_DATA_API_BASE_URL", fake.data_url)


def apply(*args: str) -> Result:
    return CliRunner().invoke(main, ["line", "richmenu", "apply", *args])


def ours(fake: FakeLineApi) -> list[dict[str, Any]]:
    return [m for m in fake.rich_menus.values() if m["name"].startswith("yarigai")]


@pytest.mark.usefixtures("env")
def test_apply_creates_uploads_sets_default_and_running_again_leaves_one(
    fake: FakeLineApi,
) -> None:
    assert find_cjk_font() is not None, "install a Japanese font (fonts-noto-cjk)"
    foreign = "richmenu-campaign"
    fake.rich_menus[foreign] = {  # someone else's, made in LINE's console
        "richMenuId": foreign,
        "size": {"width": 2500, "height": 843},
        "selected": False,
        "name": "campaign",
        "chatBarText": "キャンペーン",
        "areas": [],
    }

    first = apply()
    assert first.exit_code == 0, first.output
    [menu] = ours(fake)
    assert fake.default_rich_menu == menu["richMenuId"]
    assert f"rich menu {menu['richMenuId']} is the default" in first.output
    actions = [area["action"] for area in menu["areas"]]
    assert [a["displayText"] for a in actions] == [
        "診断をはじめる",
        "結果を見る",
        "面談を予約",
        "担当者に相談",
        "よくある質問",
    ]
    assert [a["data"] for a in actions] == [
        "restart",
        "show_result",
        "面談を予約",
        "agent",
        "questions",
    ]
    assert menu["size"] == {"width": 2500, "height": 1686} and menu["chatBarText"] == "メニュー"

    content_type, png = fake.rich_menu_images[menu["richMenuId"]]
    assert content_type == "image/png"
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (2500, 1686)
        rgb = image.convert("RGB")
        for area in menu[
            "areas"
        ]:  # each tile: its colour, and white label strokes across its middle
            b = area["bounds"]
            middle = [
                rgb.getpixel((x, b["y"] + b["height"] // 2))
                for x in range(b["x"] + 60, b["x"] + b["width"] - 60, 2)
            ]
            assert (255, 255, 255) in middle and len(set(middle)) > 2

    second = apply()
    assert second.exit_code == 0, second.output
    [again] = ours(fake)
    assert again["richMenuId"] != menu["richMenuId"]
    assert fake.default_rich_menu == again["richMenuId"]
    assert f"deleted the menus it replaces: {menu['richMenuId']}" in second.output
    assert foreign in fake.rich_menus  # never anyone else's menu
    assert fake.invalid == []
    assert {c.operation for c in fake.calls} >= {
        "richmenu create",
        "richmenu image",
        "richmenu default set",
        "richmenu list",
        "richmenu delete",
    }


@pytest.mark.usefixtures("env")
def test_a_failed_upload_leaves_the_old_menu_and_nothing_half_made(fake: FakeLineApi) -> None:
    assert apply().exit_code == 0
    [before] = ours(fake)
    fake.fail("richmenu image", 500, times=10)
    failed = apply()
    assert failed.exit_code == 1 and "error:" in failed.output
    assert ours(fake) == [before] and fake.default_rich_menu == before["richMenuId"]


@pytest.mark.usefixtures("env")
def test_a_given_image_is_uploaded_as_is_and_a_wrong_size_refused(
    fake: FakeLineApi, tmp_path: Path
) -> None:
    wrong = tmp_path / "small.png"
    Image.new("RGB", (800, 540), "#336699").save(wrong)
    refused = apply("--image", str(wrong))
    assert refused.exit_code == 1 and "2500x1686" in refused.output
    assert fake.rich_menus == {}

    right = tmp_path / "menu.jpg"
    Image.new("RGB", (2500, 1686), "#336699").save(right, format="JPEG")
    assert apply("--image", str(right)).exit_code == 0
    [menu] = ours(fake)
    assert fake.rich_menu_images[menu["richMenuId"]] == ("image/jpeg", right.read_bytes())


@pytest.mark.usefixtures("env")
def test_without_a_font_or_token_it_says_what_to_do(
    fake: FakeLineApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"not a font")
    broken = apply("--font", str(not_a_font))
    assert broken.exit_code == 1 and "not a font Pillow can read" in broken.output
    monkeypatch.delenv("LINE_CHANNEL_ACCESS_TOKEN")
    missing = apply()
    assert missing.exit_code == 1 and "LINE_CHANNEL_ACCESS_TOKEN is not set" in missing.output
    assert fake.rich_menus == {}


# ---------------------------------------------------------------- the flow understands the tiles


@pytest.fixture
async def served(tmp_path: Path, fake: FakeLineApi) -> AsyncIterator[Served]:
    settings = line_settings(tmp_path / "db.sqlite", fake)
    app = create_app(
        settings,
        channels=[LineChannel(retry_delays=FAST_RETRIES, loading_after=None)],
        clock=FakeClock(),
    )
    async with serving_app(app) as url:
        yield Served(
            app=app, fake=fake, hooks=Webhooks(url + WEBHOOK_PATH, fake=fake), clock=FakeClock()
        )


async def tile(served: Served, user: str, label: str) -> list[str]:
    """Tap the menu's tile `label`; what the bot answered."""
    [item] = [item for item in MENU.items if item.label == label]
    before = len(served.fake.seen(user))
    answer = await served.hooks.send(served.hooks.postback(user, item.data))
    assert answer.status_code == 200
    await served.runtime.worker.idle()
    return served.fake.texts(user)[before:]


async def test_every_tile_is_a_command_the_flow_understands(served: Served) -> None:
    user = new_user_id()
    started = await tile(served, user, "診断をはじめる")
    assert "まず、いまのお仕事を教えてください。" in started
    early = await tile(served, user, "結果を見る")
    assert "まだ診断の途中なので、まとめはこれからです。" in early
    asked = await tile(served, user, "よくある質問")
    assert any("お金はかかる？" in text for text in asked)
    # The booking flow's command, reached by its words whatever its id.
    booking = await tile(served, user, "面談を予約")
    assert any(text.startswith("面談のご予約ですね。") for text in booking), booking
    handed = await tile(served, user, "担当者に相談")
    assert any("担当者におつなぎします" in text for text in handed)
    assert served.fake.invalid == []
