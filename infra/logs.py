"""Logs as one JSON object per line, carrying the operation (or the API request) they belong to,
so a log pipeline can put an operation's story together across processes. ``text`` is the same
for a human at a terminal."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

OPERATION_ID: ContextVar[str | None] = ContextVar("operation_id", default=None)
"""The operation the current task works on (the agent sets it per command)."""
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The API request the current task serves."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if operation_id := OPERATION_ID.get():
            entry["operation_id"] = operation_id
        if request_id := REQUEST_ID.get():
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        operation_id = OPERATION_ID.get()
        return f"{text} [operation {operation_id}]" if operation_id else text


def configure(kind: str) -> None:
    """``json`` (the default) or ``text`` on stderr, at INFO."""
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter() if kind == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
