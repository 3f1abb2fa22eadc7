"""JSON Schema of the envelope and of every command and event body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.envelope import Envelope, Payload


def json_schemas() -> dict[str, dict[str, Any]]:
    """``{"envelope": ..., "<message type>": ...}``, one JSON Schema each."""
    found: dict[str, dict[str, Any]] = {"envelope": Envelope.model_json_schema()}
    for type_name, model in sorted(Payload.REGISTRY.items()):
        found[type_name] = model.model_json_schema()
    return found


def write_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
