"""Logging set-up: readable lines by default, one JSON object per line with LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from bot.tracing import TraceIds, ids_suffix

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactSessionIds(logging.Filter):
    """Web chat session ids are capabilities (knowing one reads that chat): keep them out of logs."""

    _SESSION = re.compile(r"(/api/chat/sessions/)[A-Za-z0-9_-]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self._SESSION.sub(r"\1…", a) if isinstance(a, str) else a for a in record.args
            )
        return True


class TextFormatter(logging.Formatter):
    """The readable line, then the ids of the turn or event it belongs to, if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) + ids_suffix(record)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSessionIds())
    handler.addFilter(TraceIds())  # trace, span, conversation and inbox ids on every line
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
