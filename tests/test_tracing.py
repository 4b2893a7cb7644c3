"""Tracing (OpenTelemetry): a LINE message makes spans for the webhook, the event, the turn, the
NLU, the store and the LINE call, with conversation and inbox ids and never the user's text; log
lines written in a turn carry the same ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes.line_api import BOT_USER_ID, CHANNEL_SECRET, FakeLineApi, sign
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_limits import Served, line_api, line_event, served, slack_api  # noqa: F401

from bot import tracing
from bot.logs import JsonFormatter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: the first test to ask sets it
    yield exporter
    exporter.clear()
    provider.shutdown()  # nothing more is recorded for the tests after this one


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert tracing.configure({}) is False
    assert tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
    assert tracing.configure({"OTEL_TRACES_EXPORTER": "none"}) is False


async def test_a_line_message_is_traced_with_ids_and_no_text(
    spans: InMemorySpanExporter,
    served: Served,  # noqa: F811
    line_api: FakeLineApi,  # noqa: F811
) -> None:
    user, secret_words = "U" + "e" * 32, "担当者と話したい"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(tracing.TraceIds())
    logging.getLogger().addHandler(handler)
    bot_logs = logging.getLogger("bot")
    level = bot_logs.level
    bot_logs.setLevel(logging.INFO)
    try:
        event = line_event(user, replyToken=line_api.reply_token(user))
        event["message"]["text"] = secret_words
        body = json.dumps({"destination": BOT_USER_ID, "events": [event]}).encode()
        async with httpx.AsyncClient(base_url=served.url) as client:
            answer = await client.post(
                "/webhooks/line",
                content=body,
                headers={"X-Line-Signature": sign(CHANNEL_SECRET, body)},
            )
        assert answer.status_code == 200
        await served.app.state.runtime.worker.idle()
    finally:
        logging.getLogger().removeHandler(handler)
        bot_logs.setLevel(level)
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    assert {"webhook line", "event line", "turn", "nlu", "store", "line reply"} <= names, names
    turn = next(s for s in finished if s.name == "turn")
    attributes: dict[str, Any] = dict(turn.attributes or {})
    assert isinstance(attributes["inbox.id"], int) and isinstance(
        attributes["conversation.id"], int
    )
    reply = next(s for s in finished if s.name == "line reply")
    assert reply.context.trace_id == turn.context.trace_id  # one trace for the event
    for one in finished:
        assert all(secret_words not in str(v) for v in (one.attributes or {}).values())
    # The handoff's log line, written in the turn, names the same trace and ids.
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    queued = next(line for line in lines if "queued" in line["message"])
    assert queued["conversation_id"] == attributes["conversation.id"]
    assert queued["inbox_id"] == attributes["inbox.id"]
    assert queued["trace_id"] == f"{turn.context.trace_id:032x}"
    assert all(secret_words not in json.dumps(line, ensure_ascii=False) for line in lines)
