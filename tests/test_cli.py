"""The `yarigai` command: serve refuses broken flows; chat works in a terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bot.cli.chat import run_chat
from bot.config import Settings

ROOT = Path(__file__).parent.parent


def test_serve_refuses_to_start_on_a_broken_flow(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "tests/flows/broken/unknown_target.yaml", flows / "broken.yaml")
    env = {
        **os.environ,
        "FLOWS_DIR": str(flows),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "PORT": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "broken.yaml:" in result.stderr
    assert "goes to unknown state" in result.stderr


def _lines(*typed: str) -> Iterator[str]:
    yield from typed
    yield "/quit"


async def test_terminal_chat_numbers_choices(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    typed = _lines("1", "2", "これで全部")
    shown: list[str] = []
    await run_chat(settings, read=lambda _prompt: next(typed), write=shown.append)
    screen = "\n".join(shown)
    assert "  1. 経理" in screen
    assert "  2. ✓ 毎日同じことの繰り返し" in screen
    assert "（1/8）" in screen  # the fit check started after the frustrations


async def test_terminal_chat_keeps_progress_between_runs(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = _lines("2")
    await run_chat(settings, read=lambda _p: next(first), write=lambda _l: None)
    shown: list[str] = []
    later = _lines("1")
    await run_chat(settings, read=lambda _p: next(later), write=shown.append)
    screen = "\n".join(shown)
    assert "おかえりなさい" in screen and "  1. 続きから" in screen
    assert "やりがいを感じにくいのは" in screen  # back at the frustrations question


async def test_terminal_chat_takes_several_numbers_and_never_says_buttons(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    typed = _lines("1", "1 3", "ヘルプ", "2,5", "6")
    shown: list[str] = []
    await run_chat(settings, read=lambda _prompt: next(typed), write=shown.append)
    screen = "\n".join(shown)
    # 「1 3」 picked two frustrations at once, 「2,5」 two more; 6 was 「これで全部」.
    assert "  1. ✓ 成果が見えにくい" in screen and "  3. ✓ 売上への貢献が見えない" in screen
    assert "  5. ✓ 成長している実感がない" in screen
    assert "（1/8）" in screen
    assert "ボタン" not in screen, [line for line in shown if "ボタン" in line]
