"""The README stays true: its flow diagram is the current one, its env table lists every setting."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.flows.graph import mermaid
from bot.flows.loader import load_flow

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_embeds_the_current_career_graph() -> None:
    graph = mermaid(load_flow(ROOT / "flows" / "career.yaml"))
    assert f"```mermaid\n{graph.rstrip()}\n```" in README, (
        "README's diagram is stale: paste the output of `yarigai flows graph flows/career.yaml`"
    )


def test_every_setting_is_documented() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        variable = name.upper()
        assert f"`{variable}`" in README, f"{variable} is missing from README's table"
        assert f"{variable}=" in example, f"{variable} is missing from .env.example"
