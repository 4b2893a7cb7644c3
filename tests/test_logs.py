"""Logs never carry web chat session ids (they grant access to a conversation)."""

from __future__ import annotations

import io
import json
import logging

from bot.logs import JsonFormatter, RedactSessionIds


def test_access_log_lines_hide_the_session_id() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSessionIds())
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "POST",
            "/api/chat/sessions/mDYoIDU4vUBGV8I84eSgNoYN/messages",
            "1.1",
            200,
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert "mDYoIDU4vUBGV8I84eSgNoYN" not in line["message"]
    assert "/api/chat/sessions/…/messages" in line["message"]
