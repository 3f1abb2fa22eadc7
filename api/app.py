"""The FastAPI application: routers and error handlers. Its adapters come from the composition
root (``entrypoints.bootstrap``), which hands them over in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import audit, backups, databases, health, operations, point_in_time, projects

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(lifespan: Lifespan) -> FastAPI:
    app = FastAPI(
        title="pgplane", version="1.0.0", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json"
    )
    install_error_handlers(app)
    for module in (projects, databases, backups, point_in_time, operations, audit):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(health.router)
    return app
