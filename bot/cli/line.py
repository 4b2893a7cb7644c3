"""`yarigai line`: the LINE channel's setup as code (`richmenu apply`: the rich menu)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from bot.channels.line.richmenu import MENU, Applied, RichMenus, apply
from bot.channels.line.richmenu_image import draw, image_size
from bot.cli.store import fail
from bot.config import Settings
from bot.errors import BotError

_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@click.group()
def line() -> None:
    """The LINE channel's setup."""


@line.group()
def richmenu() -> None:
    """The rich menu every user sees under the chat."""


@richmenu.command("apply")
@click.option(
    "--font",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A font with Japanese for the labels (default: one found on this machine).",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use this PNG or JPEG (2500x1686) instead of drawing one.",
)
@click.option(
    "--save", type=click.Path(dir_okay=False, path_type=Path), help="Also write the image here."
)
def apply_command(font: Path | None, image: Path | None, save: Path | None) -> None:
    """Create the menu (診断をはじめる / 結果を見る / 面談を予約 / 担当者に相談 / よくある質問),
    upload its image, make it the default and delete the one it replaces (running it again
    leaves one menu)."""
    settings = Settings()
    token = settings.line_channel_access_token
    if token is None:
        fail("LINE_CHANNEL_ACCESS_TOKEN is not set")
    try:
        if image is not None:
            data = image.read_bytes()
            content_type = _TYPES.get(image.suffix.lower())
            if content_type is None:
                fail(f"{image}: the image must be .png or .jpg")
            if image_size(data) != (MENU.width, MENU.height):
                fail(f"{image}: the image must be {MENU.width}x{MENU.height}, as the menu")
        else:
            data, content_type = draw(MENU, font), "image/png"
        if save is not None:
            save.write_bytes(data)
        applied = asyncio.run(_apply(settings, token.get_secret_value(), data, content_type))
    except BotError as error:
        fail(str(error))
    click.echo(f"rich menu {applied.menu_id} is the default for every user")
    if applied.removed:
        click.echo(f"deleted the menus it replaces: {', '.join(applied.removed)}")


async def _apply(settings: Settings, token: str, image: bytes, content_type: str) -> Applied:
    menus = RichMenus.open(
        base_url=settings.line_api_base_url,
        data_base_url=settings.line_data_api_base_url,
        access_token=token,
    )
    try:
        return await apply(menus, MENU, image, content_type)
    finally:
        await menus.close()
