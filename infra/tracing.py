"""Traces: one API request is one trace, through the bus, the agent, the projector and the webhook
dispatcher. Every envelope carries the W3C ``traceparent`` of the span that made it
(``Envelope.wrap`` takes the current one), and whoever handles the message starts its span
with that as the parent.

``PGPLANE_TRACE_EXPORTER`` says where finished spans go: ``none`` (the default: no SDK is
installed, spans are the API's no-ops and nothing is recorded), ``otlp`` (OTLP over HTTP to
``OTEL_EXPORTER_OTLP_ENDPOINT``, batched), or ``jsonl:<path>`` (one JSON object per finished
span per line, for tests and local debugging; each process writes its own file, ``<path>`` with
its service name before the suffix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from infra.settings import Settings

TRACER = trace.get_tracer("pgplane")
_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False


def configure(settings: Settings, service: str) -> None:
    """Install the exporter ``settings.trace_exporter`` names for this process (once, at start)."""
    global _enabled
    exporter = settings.trace_exporter
    if exporter == "none":
        return
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"pgplane-{service}"}))
    if exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        path = Path(exporter.removeprefix("jsonl:"))
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(service_file(path, service))))
    trace.set_tracer_provider(provider)  # flushed and shut down at exit
    _enabled = True


def enabled() -> bool:
    """Whether this process records spans (hot paths skip tracing work when not)."""
    return _enabled


def service_file(path: Path, service: str) -> Path:
    """``spans.jsonl`` → ``spans.api.jsonl``: one file per process, no interleaved writers."""
    return path.with_name(f"{path.stem}.{service}{path.suffix}")


@contextmanager
def span(
    name: str, *, parent: str | None = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> Iterator[Span]:
    """A current span; with ``parent`` (a message's ``traceparent``) it continues that trace,
    without it the current span is the parent."""
    context = _PROPAGATOR.extract({"traceparent": parent}) if parent else None
    with TRACER.start_as_current_span(name, context=context, kind=kind, attributes=attributes) as current:
        yield current


def record_span(
    name: str, *, parent: str, start_ns: int, end_ns: int, kind: SpanKind, attributes: Attributes = None
) -> None:
    """A finished span, after the fact: work done in bulk (a batch) reported per message."""
    context = _PROPAGATOR.extract({"traceparent": parent})
    TRACER.start_span(name, context=context, kind=kind, attributes=attributes, start_time=start_ns).end(end_ns)


class JsonLinesExporter(SpanExporter):
    """Each finished span as one JSON line appended to ``path`` (one write per line)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for finished in spans:
            os.write(self._fd, (json.dumps(span_record(finished), default=str) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self._fd)


def span_record(finished: ReadableSpan) -> dict[str, object]:
    context = finished.get_span_context()
    parent = finished.parent
    return {
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": finished.name,
        "kind": finished.kind.name.lower(),
        "service": finished.resource.attributes.get(SERVICE_NAME),
        "start": _time(finished.start_time),
        "end": _time(finished.end_time),
        "status": finished.status.status_code.name.lower(),
        "attributes": dict(finished.attributes or {}),
    }


def _time(ns: int | None) -> str | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")
