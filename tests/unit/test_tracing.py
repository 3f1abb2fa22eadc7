"""Trace context in envelopes and signatures, the JSON-lines exporter, and spans continuing a
message's trace, without servers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from infra import tracing
from infra.settings import Settings
from infra.signing import CommandSigner, CommandVerifier, SignatureRejected, new_signing_key, signed_bytes
from schemas.commands import DeleteDatabase
from schemas.envelope import Envelope, current_traceparent

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
SUBJECT = "pgplane.cmd.host-1.database.delete"


def command(traceparent: str | None = None) -> Envelope:
    database_id = uuid.uuid4()
    return Envelope.wrap(
        DeleteDatabase(database_id=database_id, dbname=f"db_{database_id.hex}", role=f"u_{database_id.hex}"),
        correlation_id=uuid.uuid4(),
        sequence=1,
        actor="admin",
        project_id=uuid.uuid4(),
        traceparent=traceparent,
    )


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans ``infra.tracing`` starts, recorded in memory (this process's provider stays untouched)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "pgplane-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("pgplane"))
    yield exporter
    provider.shutdown()


def test_an_envelope_without_trace_context_parses_and_round_trips() -> None:
    untraced = command()
    assert untraced.traceparent is None
    old = untraced.model_dump(mode="json", exclude={"traceparent"})  # what a message from before looks like
    assert Envelope.model_validate(old) == untraced
    traced = command(PARENT)
    assert Envelope.model_validate_json(traced.model_dump_json()) == traced


def test_a_malformed_traceparent_is_refused() -> None:
    with pytest.raises(ValidationError):
        command("00-nothex-b7ad6b7169203331-01")


def test_wrap_takes_the_current_span_as_the_message_trace_context(spans: InMemorySpanExporter) -> None:
    with tracing.span("request", parent=PARENT):
        made = command()
        assert made.traceparent == current_traceparent()
        assert command(PARENT).traceparent == PARENT  # a given one wins
    (finished,) = spans.get_finished_spans()
    assert made.traceparent == f"00-{TRACE_ID}-{finished.context.span_id:016x}-01"


def test_a_span_continues_the_trace_of_the_envelope_it_handles(spans: InMemorySpanExporter) -> None:
    received = command(PARENT)
    with tracing.span("handle", parent=received.traceparent, kind=SpanKind.CONSUMER), tracing.span("step"):
        pass
    step, handle = spans.get_finished_spans()
    assert handle.parent is not None and f"{handle.parent.span_id:016x}" == "b7ad6b7169203331"
    assert f"{handle.context.trace_id:032x}" == TRACE_ID and handle.kind is SpanKind.CONSUMER
    assert step.parent is not None and step.parent.span_id == handle.context.span_id


def test_a_span_recorded_after_the_fact_keeps_its_times_and_parent(spans: InMemorySpanExporter) -> None:
    tracing.record_span("project", parent=PARENT, start_ns=1_000, end_ns=5_000, kind=SpanKind.CONSUMER)
    (finished,) = spans.get_finished_spans()
    assert (finished.start_time, finished.end_time) == (1_000, 5_000)
    assert finished.parent is not None and f"{finished.context.trace_id:032x}" == TRACE_ID


def test_without_an_exporter_a_span_only_passes_its_parent_on() -> None:
    tracing.configure(Settings(trace_exporter="none"), "test")
    assert not tracing.enabled()
    with tracing.span("handle", parent=PARENT) as current:
        assert not current.is_recording() and current_traceparent() == PARENT
    assert current_traceparent() is None


def test_signatures_cover_the_trace_context_only_when_there_is_one() -> None:
    signing, verify = new_signing_key()
    signer, verifier = CommandSigner(signing), CommandVerifier(verify)
    untraced = signer.sign(command(), SUBJECT)
    assert b"traceparent" not in signed_bytes(untraced, SUBJECT)  # commands signed before it existed verify
    verifier.verify(untraced, SUBJECT)
    verifier.verify(Envelope.model_validate_json(untraced.model_dump_json()), SUBJECT)

    traced = signer.sign(command(PARENT), SUBJECT)
    verifier.verify(Envelope.model_validate_json(traced.model_dump_json()), SUBJECT)
    for forged in (
        traced.model_copy(update={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}),
        traced.model_copy(update={"traceparent": None}),
        untraced.model_copy(update={"traceparent": PARENT}),
    ):
        with pytest.raises(SignatureRejected):
            verifier.verify(forged, SUBJECT)


def test_the_json_lines_exporter_writes_one_object_per_span(tmp_path: Path) -> None:
    path = tracing.service_file(tmp_path / "spans.jsonl", "agent")
    assert path == tmp_path / "spans.agent.jsonl"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "pgplane-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(tracing.JsonLinesExporter(path)))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("handle", attributes={"pgplane.delivery": 1}) as parent,
        tracer.start_as_current_span("step"),
    ):
        pass
    provider.shutdown()
    step, handle = (json.loads(line) for line in path.read_text().splitlines())
    assert handle["name"] == "handle" and step["name"] == "step"
    assert handle["trace_id"] == step["trace_id"] == f"{parent.get_span_context().trace_id:032x}"
    assert step["parent_id"] == handle["span_id"] and handle["parent_id"] is None
    assert handle["service"] == "pgplane-agent" and handle["attributes"] == {"pgplane.delivery": 1}
    assert handle["start"] <= step["start"] <= step["end"] <= handle["end"]
    assert handle["kind"] == "internal" and handle["status"] == "unset"
