"""The FastAPI application: routers and error handlers. Its adapters come from the composition
root (``entrypoints.bootstrap``, ``entrypoints.control_plane``), which hands them over in the
lifespan."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.errors import install_error_handlers
from api.middleware import RequestGuard, RequestMetrics
from api.routes import (
    accounts,
    admin,
    audit,
    backups,
    billing,
    databases,
    events,
    health,
    oauth,
    oidc,
    operations,
    organizations,
    point_in_time,
    projects,
    webhooks,
)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


SWAGGER_UI = Path(swagger_ui_bundle.swagger_ui_path)


def create_app(lifespan: Lifespan, *, max_body_bytes: int = 2**20) -> FastAPI:
    app = FastAPI(
        title="pgplane",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        telemetry={"tracing": False},  # the request span is ours (api.middleware): one per request
    )
    install_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    app.add_middleware(RequestMetrics)
    for module in (
        accounts,
        organizations,
        billing,
        projects,
        databases,
        backups,
        point_in_time,
        operations,
        events,
        webhooks,
        audit,
        admin,
    ):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(health.router)
    app.include_router(oauth.router)
    app.include_router(oidc.router)
    app.mount("/api/docs/assets", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    @app.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI, served from our own assets: it works offline."""
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="pgplane API",
            swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/api/docs/assets/swagger-ui.css",
            swagger_favicon_url="/api/docs/assets/favicon-32x32.png",
        )

    return app
