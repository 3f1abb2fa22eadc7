"""The one envelope every message travels in (CloudEvents-compatible field set)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
SOURCE = "pgplane"
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C ``traceparent`` header value: version, trace id, parent span id, flags."""
_PROPAGATOR = TraceContextTextMapPropagator()


class Payload(BaseModel):
    """Base of every command and event body; ``TYPE`` names it on the wire."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    TYPE: ClassVar[str]
    REGISTRY: ClassVar[dict[str, type[Payload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            Payload.REGISTRY[cls.TYPE] = cls


class Envelope(BaseModel):
    """Who asked for what, on behalf of which operation, and what caused it.

    ``correlation_id`` is the operation; ``sequence`` is the message's position within
    that operation (0 for the request), which makes ids deterministic: a re-emitted
    event carries exactly the id it had the first time.
    """

    __slots__ = ("_parsed_data",)
    """``data`` and its payload, parsed once (a plain slot: a pydantic private attribute costs more
    than the parse; copies do not carry it, and a copy with other ``data`` parses its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = "1.0"
    id: uuid.UUID
    type: str
    source: str = SOURCE
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    sequence: int = Field(ge=0)
    actor: str
    project_id: uuid.UUID
    schema_version: int = SCHEMA_VERSION
    data: dict[str, Any]
    key_id: str | None = None
    """Commands: which key signed the envelope (see ``infra.signing``)."""
    signature: str | None = None
    """Commands: base64 Ed25519 signature over the subject and the rest of the envelope."""
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT, exclude_if=lambda value: value is None)
    """The W3C trace context of the span that made the message. Absent when not traced, so an
    untraced message is byte for byte what releases before tracing wrote (and they accept)."""

    @model_validator(mode="after")
    def _data_fits_type(self) -> Self:
        object.__setattr__(self, "_parsed_data", (self.data, self._parsed()))
        return self

    def payload(self) -> Payload:
        """The typed body; unknown types and malformed bodies raise ``ValueError``."""
        parsed: tuple[dict[str, Any], Payload] | None = getattr(self, "_parsed_data", None)
        if parsed is None or parsed[0] is not self.data:
            parsed = (self.data, self._parsed())
            object.__setattr__(self, "_parsed_data", parsed)
        return parsed[1]

    def _parsed(self) -> Payload:
        model = Payload.REGISTRY.get(self.type)
        if model is None:
            raise ValueError(f"unknown message type {self.type!r}")
        return model.model_validate(self.data)

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id`` that makes a retried publish a no-op."""
        return f"{self.correlation_id}:{self.sequence}"

    @classmethod
    def wrap(
        cls,
        payload: Payload,
        *,
        correlation_id: uuid.UUID,
        sequence: int,
        actor: str,
        project_id: uuid.UUID,
        causation_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        """The message ``payload`` makes; it joins the current trace unless ``traceparent`` says otherwise."""
        return cls(
            id=message_id(correlation_id, sequence),
            type=payload.TYPE,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=correlation_id,
            causation_id=causation_id,
            sequence=sequence,
            actor=actor,
            project_id=project_id,
            data=payload.model_dump(mode="json"),
            traceparent=traceparent or current_traceparent(),
        )


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span; ``None`` outside any recorded or propagated trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def message_id(correlation_id: uuid.UUID, sequence: int) -> uuid.UUID:
    """Deterministic message id: the same operation step always gets the same id."""
    return uuid.uuid5(correlation_id, str(sequence))
