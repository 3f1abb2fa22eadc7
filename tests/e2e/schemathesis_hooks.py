"""Schemathesis hooks for ``test_openapi``: every generated request gets its own Idempotency-Key
(one key reused with another request is a 422 by design, tested in the idempotency tests)."""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
