"""Every error is ``{"error": {"code", "message"}}`` with the right status, and the OpenAPI
document says which errors each route answers with."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from api.middleware import BodyTooLarge, error_body, request_id_of

log = logging.getLogger("pgplane.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable and specific: what went wrong, for programs.")
    message: str = Field(description="What went wrong, for people.")
    request_id: str = Field(description="Also in the X-Request-Id header; quote it when you ask us.")


class ErrorBody(BaseModel):
    error: ErrorDetail


MEANINGS = {
    400: "A signature that does not verify the body.",
    401: "No valid bearer token.",
    403: "The token may not do this.",
    404: "Not found, or another tenant's.",
    409: "Conflicts with the current state: a name taken, the quota reached, another operation running.",
    413: "The body is larger than the limit (1 MiB unless configured otherwise).",
    415: "The body is not JSON.",
    422: "Invalid request, or an Idempotency-Key reused with another request.",
    429: "Over the plan's request rate, or too many wrong tokens from this address: wait Retry-After seconds.",
    503: "A component the answer needs is down.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entry documenting these error statuses with the error body."""
    return {status: {"model": ErrorBody, "description": MEANINGS[status]} for status in statuses}


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = error_body(code, message, request_id_of(request.scope))
    return JSONResponse(json.loads(body), status_code=status, headers=headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            position = err.get("loc", ("body", "?"))[-1]
            return f"the body is not valid JSON: {err.get('ctx', {}).get('error')} (at character {position})"
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


CHARACTER_NOT_IN_REPERTOIRE = "22021"
"""What PostgreSQL answers to a NUL character in text: it can store none."""

HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed"}


def _allowed_methods(request: Request) -> str:
    """Every method the OpenAPI document lists for this path (Starlette's own 405 names only the
    methods of the first route that matched the path)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_request", _describe(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, _: BodyTooLarge) -> JSONResponse:
        return error_response(request, 413, "body_too_large", "the body is larger than this API accepts")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps what reading raised
            return error_response(request, 413, "body_too_large", "the body is larger than this API accepts")
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot even decode
            return error_response(request, 422, "invalid_body", "the body is not JSON in UTF-8")
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, "internal_error", "something went wrong on our side")

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        if getattr(exc.orig, "sqlstate", None) == CHARACTER_NOT_IN_REPERTOIRE:  # a NUL in some text
            return error_response(request, 422, "invalid_text", "text may not contain NUL characters")
        return await _unexpected(request, exc)
