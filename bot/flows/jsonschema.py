"""The JSON Schema of a flow file, generated from `FlowSpec`, for editors and other tools.

Editors pick it up from a first line `# yaml-language-server: $schema=flow.schema.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from bot.flows.schema import FlowSpec

SCHEMA_FILE: Final = "flow.schema.json"
"""The committed schema's name, beside the flows it describes."""

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID: Final = "urn:yarigai:flow"


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a YAML flow file, keys as written in YAML (`if`, not `if_`)."""
    generated = FlowSpec.model_json_schema(by_alias=True)
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        **generated,
        "title": "yarigai flow",
        "description": "A conversation flow: states, questions, branches and global commands.",
    }


def schema_text() -> str:
    """The schema as committed: 2-space indent, UTF-8 as is, trailing newline."""
    return json.dumps(flow_json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: str | Path) -> Path:
    """Write the schema to `path` (a file, or a directory to hold `flow.schema.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / SCHEMA_FILE
    path.write_text(schema_text(), encoding="utf-8")
    return path
