"""The internal bus as an AsyncAPI 3.0 document, generated with FastStream's own tooling from
the message contract (``schemas.commands``, ``schemas.events``) and the subjects
(``schemas.subjects``). Committed as ``schemas/asyncapi.json`` (``schemas.export``); a test keeps
the two the same.

The broker here is never connected: it only describes who sends what where. Every message is an
``Envelope`` whose ``data`` is the type's body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from pydantic import create_model

from schemas.commands import DatabaseCommand
from schemas.envelope import Envelope, Payload
from schemas.export import ASYNCAPI_DOCUMENT
from schemas.subjects import Subjects

HOST = "{host_id}"


def _message(model: type[Payload]) -> type[Envelope]:
    """The envelope as it travels with ``model`` as its ``data``."""
    message: type[Envelope] = create_model(
        f"{model.__name__}Message", __base__=Envelope, __doc__=model.__doc__, data=(model, ...)
    )
    return message


def bus_specification(namespace: str = "pgplane") -> dict[str, Any]:
    subjects = Subjects(namespace=namespace)
    broker = NatsBroker()
    for type_name, model in sorted(Payload.REGISTRY.items()):
        if issubclass(model, DatabaseCommand):
            subject = subjects.command(HOST, model.KIND)
            sender = "the API (or the scheduler) → the agent of host {host_id}"
        else:
            subject = subjects.event(type_name)
            sender = "an agent, the API or the scheduler → the projector"
        broker.publisher(subject, title=type_name, description=sender, schema=_message(model))
    document = AsyncAPI(
        broker,
        title="pgplane bus",
        version="1.0.0",
        description="Commands to data hosts and the events they emit, on NATS JetStream.",
        schema_version="3.0.0",
    ).to_specification()
    result: dict[str, Any] = json.loads(document.to_json())
    return result


def write_specification(directory: Path) -> Path:
    path = directory / ASYNCAPI_DOCUMENT.name
    path.write_text(json.dumps(bus_specification(), indent=2, sort_keys=True) + "\n")
    return path
