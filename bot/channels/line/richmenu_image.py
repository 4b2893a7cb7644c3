"""The rich menu's image, drawn from its definition with Pillow: one coloured tile per item,
its label in a Japanese font (found on the machine, or given)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from bot.channels.line.richmenu import RichMenu
from bot.errors import ConfigError

# Bold first: the labels are read at a glance, on a small screen.
_FONT_GLOBS: Final = (
    "/usr/share/fonts/**/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/**/NotoSansCJK*-Bold.otf",
    "/usr/share/fonts/**/NotoSansJP-Bold.*",
    "/usr/share/fonts/**/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/**/NotoSansCJK*.ttc",
    "/usr/share/fonts/**/NotoSansJP*",
    "/usr/local/share/fonts/**/NotoSans*JP*",
    "/System/Library/Fonts/ヒラギノ角ゴシック W6.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/meiryob.ttc",
    "C:/Windows/Fonts/YuGothB.ttc",
)
_GAP: Final = 6  # white lines between tiles, in pixels
_TEXT: Final = "#FFFFFF"


class NoFont(ConfigError):
    """No font that has Japanese was found, and none was given."""


def find_cjk_font() -> Path | None:
    """A font with Japanese glyphs on this machine: the known files, else fontconfig's."""
    for pattern in _FONT_GLOBS:
        root, _, rest = pattern.partition("/**/")
        base = Path(root) if rest else Path(pattern).parent
        matches = sorted(base.glob(f"**/{rest}")) if rest else sorted(base.glob(Path(pattern).name))
        if matches:
            return matches[0]
    if shutil.which("fc-list"):
        listed = subprocess.run(
            ["fc-list", ":lang=ja", "file"], capture_output=True, text=True, check=False
        ).stdout
        files = sorted(line.split(":")[0].strip() for line in listed.splitlines() if line.strip())
        if files:
            return Path(files[0])
    return None


def draw(menu: RichMenu, font: Path | None = None) -> bytes:
    """The menu as a PNG of exactly its size (LINE refuses any other)."""
    path = font or find_cjk_font()
    if path is None:
        raise NoFont(
            "no font with Japanese found: install one (Debian: fonts-noto-cjk), or pass "
            "--font FILE, or --image FILE"
        )
    image = Image.new("RGB", (menu.width, menu.height), "#FFFFFF")
    pen = ImageDraw.Draw(image)
    tiles = menu.tiles()
    # One size for every label (the one the longest needs), so the menu reads as one piece.
    face = min(
        (
            _fitting(path, item.label, width - 120, max(height // 6, 40))
            for item, (_, _, width, height) in tiles
        ),
        key=lambda f: f.size,
    )
    for item, (x, y, width, height) in tiles:
        box = (x + _GAP // 2, y + _GAP // 2, x + width - _GAP // 2 - 1, y + height - _GAP // 2 - 1)
        pen.rectangle(box, fill=item.color)
        pen.text((x + width / 2, y + height / 2), item.label, font=face, fill=_TEXT, anchor="mm")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """An image file's width and height (to check a given file against the menu)."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        return width, height


def _fitting(path: Path, text: str, width: int, size: int) -> ImageFont.FreeTypeFont:
    """The font at `size`, smaller if the text would not fit `width`."""
    try:
        face = ImageFont.truetype(str(path), size)
    except OSError as error:
        raise NoFont(f"{path}: not a font Pillow can read ({error})") from None
    while size > 20 and face.getlength(text) > width:
        size -= 8
        face = ImageFont.truetype(str(path), size)
    return face
