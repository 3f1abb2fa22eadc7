"""What every request meets before any route, authentication or body parsing: a request id (in
every response and every error), a body limit enforced while the body is read (413), and JSON as
the only body type (415; OAuth's forms where OAuth needs them). A 50 MB body without a token costs
a few kilobytes, not 50 MB. And
every request counted and timed for Prometheus, and traced: the request's span is current while
it runs, so the messages it writes carry its trace (a ``traceparent`` header continues the
caller's)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import logs, tracing
from infra.metrics import HTTP_REQUESTS, HTTP_SECONDS

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
FORM_PATHS = frozenset({"/oauth/device/code", "/oauth/token", "/device"})
"""OAuth speaks forms (RFC 6749), and so does the page that approves a device."""


class BodyTooLarge(Exception):
    pass


def error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()


def is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def is_form(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        logs.REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        async def refuse(status: int, code: str, text: str) -> None:
            body = error_body(code, text, request_id)
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await refuse(413, "body_too_large", f"the body is larger than {self.max_body_bytes} bytes")
            return
        has_body = (length.isdigit() and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "")
        content_type = headers.get("content-type", "")
        form = scope["path"] in FORM_PATHS and is_form(content_type)
        if scope["method"] in BODY_METHODS and has_body and not is_json(content_type) and not form:
            await refuse(415, "unsupported_media_type", "bodies are JSON: send Content-Type: application/json")
            return

        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send_with_id)
        except BodyTooLarge:
            if not started:
                await refuse(413, "body_too_large", f"the body is larger than {self.max_body_bytes} bytes")


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


class RequestMetrics:
    """Counts every request by method, route template and status, times it, and traces it (a span
    named by the method and the route template)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        caller = dict(scope["headers"]).get(b"traceparent", b"").decode("latin-1") or None
        with tracing.span(method, parent=caller, kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, counting)
            finally:
                route = route_template(scope)
                HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
                HTTP_SECONDS.labels(route=route).observe(time.perf_counter() - started)
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": status,
                        "pgplane.request_id": request_id_of(scope),
                    }
                )


def route_template(scope: Scope) -> str:
    """The matched route as written (``/api/v1/databases/{database_id}``), whatever prefix it was
    included under; ``unmatched`` when none matched (labels stay few)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    segments = len(template.strip("/").split("/")) if template.strip("/") else 0
    actual = scope["path"].rstrip("/").split("/")
    return "/".join(actual[: len(actual) - segments]) + template
