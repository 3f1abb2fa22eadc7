"""Log lines are JSON objects that carry the operation and the request they belong to."""

from __future__ import annotations

import json
import logging

from infra.logs import OPERATION_ID, REQUEST_ID, JsonFormatter


def test_a_line_carries_the_operation_and_the_request() -> None:
    record = logging.LogRecord("pgplane.agent", logging.WARNING, __file__, 1, "step %s failed", ("x",), None)
    assert json.loads(JsonFormatter().format(record)).keys() == {"time", "level", "logger", "message"}
    operation, request = OPERATION_ID.set("op-1"), REQUEST_ID.set("req-1")
    try:
        entry = json.loads(JsonFormatter().format(record))
    finally:
        OPERATION_ID.reset(operation)
        REQUEST_ID.reset(request)
    assert entry | {"time": "-"} == {
        "time": "-",
        "level": "warning",
        "logger": "pgplane.agent",
        "message": "step x failed",
        "operation_id": "op-1",
        "request_id": "req-1",
    }
