"""JSON Schema of the envelope and of every command and event body (the bus), and of the public
events subscribers receive (committed in ``schemas/public/``; a test keeps the two the same); and
the committed AsyncAPI document of the bus (made by ``schemas.asyncapi``, which the API does not
load: it needs FastStream, and the API only serves the file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import Envelope, Payload
from schemas.public_events import PublicData, PublicEvent

PUBLIC_DIRECTORY = Path(__file__).parent / "public"
ASYNCAPI_DOCUMENT = Path(__file__).parent / "asyncapi.json"


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{"envelope": ..., "<message type>": ...}``, one JSON Schema each."""
    found: dict[str, dict[str, Any]] = {"envelope": Envelope.model_json_schema()}
    for type_name, model in sorted(Payload.REGISTRY.items()):
        found[type_name] = model.model_json_schema()
    return found


def public_json_schemas() -> dict[str, dict[str, Any]]:
    """``{"event": ..., "<public event type>": <its data>, ...}``."""
    found: dict[str, dict[str, Any]] = {"event": PublicEvent.model_json_schema()}
    for event_type, model in sorted(PublicData.REGISTRY.items()):
        found[event_type.value] = model.model_json_schema()
    return found


def committed_public_schemas() -> dict[str, dict[str, Any]]:
    """The public schemas as committed (``pgplane schemas export-public schemas/public``)."""
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text())
        for path in sorted(PUBLIC_DIRECTORY.glob("*.schema.json"))
    }


def committed_specification() -> dict[str, Any]:
    """The bus's AsyncAPI document as committed (``pgplane schemas export-asyncapi schemas``)."""
    result: dict[str, Any] = json.loads(ASYNCAPI_DOCUMENT.read_text())
    return result


def write_json_schemas(directory: Path, schemas: dict[str, dict[str, Any]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
