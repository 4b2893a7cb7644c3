"""The LINE rich menu as code: its items (each a postback the flow understands: a command's id,
or its label), the request LINE takes, and applying it through the SDK: create the menu,
upload its image (on the data API host), make it the default, then delete the menus of ours it
replaces, so running it twice leaves one."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    AsyncMessagingApiBlob,
    Configuration,
    PostbackAction,
    RichMenuArea,
    RichMenuBounds,
    RichMenuRequest,
    RichMenuSize,
)

from bot.channels.line.api import LineApiError, LineTimedOut, translate_error

log = logging.getLogger(__name__)

NAME_PREFIX: Final = "yarigai"
"""Menus whose name starts with this are ours: replaced by `apply`, never anyone else's."""


@dataclass(frozen=True, slots=True)
class MenuItem:
    """One tappable tile: `label` is drawn and shown as the user's words (displayText);
    `data` is what the postback carries: a flow command's id, or its label."""

    label: str
    data: str
    color: str  # the tile's background, "#RRGGBB"


@dataclass(frozen=True, slots=True)
class RichMenu:
    """A grid of tiles: each row splits the width evenly, the rows split the height."""

    chat_bar_text: str
    rows: tuple[tuple[MenuItem, ...], ...]
    width: int = 2500
    height: int = 1686

    @property
    def items(self) -> list[MenuItem]:
        return [item for row in self.rows for item in row]

    def tiles(self) -> list[tuple[MenuItem, tuple[int, int, int, int]]]:
        """Each item with its bounds (x, y, width, height), in reading order."""
        found = []
        row_height = self.height // len(self.rows)
        for r, row in enumerate(self.rows):
            y = r * row_height
            height = self.height - y if r == len(self.rows) - 1 else row_height
            tile_width = self.width // len(row)
            for c, item in enumerate(row):
                x = c * tile_width
                width = self.width - x if c == len(row) - 1 else tile_width
                found.append((item, (x, y, width, height)))
        return found

    @property
    def name(self) -> str:
        """Ours, and which definition: a changed menu gets a new name."""
        return f"{NAME_PREFIX} {self.digest()}"

    def digest(self) -> str:
        definition = json.dumps(self.request().to_dict(), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(definition.encode()).hexdigest()[:12]

    def request(self, *, name: str = NAME_PREFIX) -> RichMenuRequest:
        areas = [
            RichMenuArea(
                bounds=RichMenuBounds(x=x, y=y, width=w, height=h),
                action=PostbackAction(label=item.label, data=item.data, displayText=item.label),
            )
            for item, (x, y, w, h) in self.tiles()
        ]
        return RichMenuRequest(
            size=RichMenuSize(width=self.width, height=self.height),
            selected=True,
            name=name,
            chatBarText=self.chat_bar_text,
            areas=areas,
        )


BOOK_TEXT: Final = "面談を予約"
"""The booking command's words: the tile sends them as its postback data and displayText
(the flow maps a command's label to the command, whichever id the booking flow gives it)."""

MENU: Final = RichMenu(
    chat_bar_text="メニュー",
    rows=(
        (
            MenuItem(label="診断をはじめる", data="restart", color="#2E7D6B"),
            MenuItem(label="結果を見る", data="show_result", color="#3B8E7B"),
            MenuItem(label=BOOK_TEXT, data=BOOK_TEXT, color="#E07A3F"),
        ),
        (
            MenuItem(label="担当者に相談", data="agent", color="#4A6FA5"),
            MenuItem(label="よくある質問", data="questions", color="#6C7A89"),
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Applied:
    menu_id: str
    removed: tuple[str, ...]


class RichMenus:
    """Rich menu calls through the SDK: the API host for menus, the data host for images."""

    def __init__(self, *, api: AsyncApiClient, data: AsyncApiClient) -> None:
        self._clients = (api, data)
        self._api = AsyncMessagingApi(api)
        self._blob = AsyncMessagingApiBlob(data)

    @classmethod
    def open(cls, *, base_url: str, data_base_url: str, access_token: str) -> RichMenus:
        def client(host: str) -> AsyncApiClient:
            return AsyncApiClient(Configuration(host=host.rstrip("/"), access_token=access_token))

        return cls(api=client(base_url), data=client(data_base_url))

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def list(self) -> list[tuple[str, str]]:
        """(id, name) of every rich menu of the channel."""
        found = await self._call("richmenu list", self._api.get_rich_menu_list())
        return [(menu.rich_menu_id, menu.name) for menu in found.richmenus]

    async def create(self, request: RichMenuRequest) -> str:
        created = await self._call("richmenu create", self._api.create_rich_menu(request))
        menu_id: str = created.rich_menu_id
        return menu_id

    async def upload(self, menu_id: str, image: bytes, content_type: str) -> None:
        await self._call(
            "richmenu image",
            self._blob.set_rich_menu_image(
                menu_id, bytes(image), _headers={"Content-Type": content_type}
            ),
        )

    async def set_default(self, menu_id: str) -> None:
        await self._call("richmenu default", self._api.set_default_rich_menu(menu_id))

    async def delete(self, menu_id: str) -> None:
        await self._call("richmenu delete", self._api.delete_rich_menu(menu_id))

    async def _call(self, operation: str, call: Any) -> Any:
        try:
            return await call
        except ApiException as exc:
            raise translate_error(operation, exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LineTimedOut(operation, message=type(exc).__name__) from None


async def apply(menus: RichMenus, menu: RichMenu, image: bytes, content_type: str) -> Applied:
    """Make `menu` (with `image`) every user's default; ours it replaces are deleted after the
    switch, so users never see the chat without a menu."""
    ours = [menu_id for menu_id, name in await menus.list() if name.startswith(NAME_PREFIX)]
    menu_id = await menus.create(menu.request(name=menu.name))
    try:
        await menus.upload(menu_id, image, content_type)
        await menus.set_default(menu_id)
    except LineApiError:
        await menus.delete(menu_id)  # no half-made menu left behind
        raise
    for old in ours:
        await menus.delete(old)
    log.info("rich menu %s is the default (replaced %d)", menu_id, len(ours))
    return Applied(menu_id=menu_id, removed=tuple(ours))
