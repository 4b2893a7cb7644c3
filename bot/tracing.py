"""Tracing with OpenTelemetry, opt-in by the standard OTEL_* variables: spans for the webhooks,
each turn, the NLU, the store and every LINE and Slack call, carrying conversation and inbox ids
(never what users wrote); log lines carry the same trace and ids.

Off (the API's no-op tracer, nothing exported) unless an exporter is named:
`OTEL_TRACES_EXPORTER=otlp` (or `console`), or an `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. The SDK reads the rest of its settings (service name,
resource attributes, sampler, headers) from the same standard variables.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span

log = logging.getLogger(__name__)

TRACER: Final = "yarigai"
_ids: contextvars.ContextVar[Mapping[str, int | str] | None] = contextvars.ContextVar(
    "yarigai_trace_ids", default=None
)
_configured = False
# A proxy until a provider is installed, then the provider's tracer: looked up once, not per span.
_tracer: Final = trace.get_tracer(TRACER)


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Install an exporting tracer provider when the OTEL_* variables ask for one; whether
    tracing is on. Idempotent (the server and its workers each call it once)."""
    global _configured
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if _configured or disabled or exporter == "none" or not (exporter or endpoint):
        return _configured
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    chosen: SpanExporter
    if exporter == "console":
        chosen = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen = OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*
    service = env.get("OTEL_SERVICE_NAME") or "yarigai"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing on: spans exported (%s)", exporter or "otlp")
    return True


@contextmanager
def span(name: str, **ids: int | str | None) -> Iterator[Span]:
    """A span named `name` with these ids as attributes (`conversation.id`, `inbox.id`...),
    which log lines written inside it carry too. Only ids and names: never user text."""
    known = {key: value for key, value in ids.items() if value is not None}
    token = _ids.set({**(_ids.get() or {}), **known})
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No provider installed: OpenTelemetry would make a no-op span through three context
        # managers, a tenth of acknowledging a webhook. The log lines still get the ids.
        try:
            yield trace.INVALID_SPAN
        finally:
            _ids.reset(token)
        return
    try:
        with _tracer.start_as_current_span(name) as current:
            for key, value in known.items():
                current.set_attribute(f"{key}.id", value)
            yield current
    finally:
        _ids.reset(token)


def annotate(**ids: int | str | None) -> None:
    """Add ids learnt along the way (a turn's conversation id once loaded) to the current span
    and to the log lines that follow in it."""
    known = {key: value for key, value in ids.items() if value is not None}
    if not known:
        return
    _ids.set({**(_ids.get() or {}), **known})
    current = trace.get_current_span()
    for key, value in known.items():
        current.set_attribute(f"{key}.id", value)


class TraceIds(logging.Filter):
    """Puts the current trace, span and ids on every log record (`trace_id`, `span_id`,
    `conversation_id`, `inbox_id`...), for the JSON lines and the text format alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        for key, value in (_ids.get() or {}).items():
            setattr(record, f"{key}_id", value)
        return True


def ids_suffix(record: logging.LogRecord) -> str:
    """A record's ids as ` [conversation=12 inbox=34 trace=...]` for the text format."""
    parts = [
        f"{name.removesuffix('_id')}={value}"
        for name, value in sorted(vars(record).items())
        if name.endswith("_id") and isinstance(value, int | str)
    ]
    return f" [{' '.join(parts)}]" if parts else ""
