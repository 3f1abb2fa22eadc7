"""A project's public events: a page at a time, or as they happen (Server-Sent Events)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.authentication import reverify
from api.deps import AdminPrincipal, CurrentPrincipal, PlatformDep
from api.errors import ApiError, errors
from api.usecases.events import event_stream, events_after
from api.usecases.projects import load_project
from schemas.export import committed_public_schemas, committed_specification
from schemas.public_events import EventType, PublicEvent

router = APIRouter(prefix="/events", tags=["events"], responses=errors(401, 403, 422, 429))

Types = Annotated[
    list[EventType],
    Query(alias="type", description="Only events of these types (repeat the parameter for several)."),
]


MAX_SEQUENCE = 2**63 - 1
"""Sequences are PostgreSQL bigints: a larger cursor is a 422, not an error halfway through a stream."""
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The events as they happen."}
}


class EventsPage(BaseModel):
    data: list[PublicEvent]
    next_after: int = Field(description="Pass as `after` for the next page (the last sequence here, or `after`).")


@router.get("", response_model=EventsPage, responses=errors(404))
async def list_events(
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    after: int = Query(default=0, ge=0, le=MAX_SEQUENCE, description="Events numbered above this sequence."),
    types: Types = [],  # noqa: B006 - FastAPI copies the default
    limit: int = Query(default=100, ge=1, le=1000),
) -> EventsPage:
    """The project's events in sequence order (every event of the project, numbered from 1)."""
    async with platform.autocommit.connect() as conn:
        await load_project(conn, principal, project_id)
        events = await events_after(conn, project_id, after=after, types=types, limit=limit)
    return EventsPage(data=events, next_after=events[-1].sequence if events else after)


@router.get("/schemas", response_model=dict[str, dict[str, Any]])
async def event_schemas(*, principal: CurrentPrincipal) -> dict[str, dict[str, Any]]:
    """JSON Schema of the event (`event`) and of each type's `data`, as committed in `schemas/public/`."""
    return committed_public_schemas()


@router.get("/asyncapi.json", response_model=dict[str, Any], responses=errors(403))
async def bus_document(*, principal: AdminPrincipal) -> dict[str, Any]:
    """The internal bus (commands to data hosts, the events they emit) as AsyncAPI 3.0 (admin token)."""
    return committed_specification()


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=STREAMED | errors(404),
)
async def stream_events(
    request: Request,
    *,
    platform: PlatformDep,
    principal: CurrentPrincipal,
    project_id: uuid.UUID,
    after: int = Query(default=0, ge=0, le=MAX_SEQUENCE, description="Start after this sequence (default: the start)."),
    types: Types = [],  # noqa: B006 - FastAPI copies the default
    last_event_id: Annotated[
        int,
        Header(
            ge=0, le=MAX_SEQUENCE, description="A reconnect resumes after this sequence (a browser sends it by itself)."
        ),
    ] = 0,
) -> StreamingResponse:
    """Server-Sent Events: `id` is the sequence, `event` the type, `data` the event; a comment
    keeps an idle stream open. Reconnect with `Last-Event-ID` to get exactly what was missed."""
    async with platform.autocommit.connect() as conn:
        await load_project(conn, principal, project_id)
    settings = platform.settings
    credential = request.state.credential

    async def allowed() -> bool:
        now = await reverify(platform, credential)
        if now is None or not now.sees(project_id):
            return False
        async with platform.autocommit.connect() as conn:
            try:
                await load_project(conn, now, project_id)
            except ApiError:
                return False
        return True

    stream = event_stream(
        platform.engine,
        project_id,
        after=max(after, last_event_id),
        types=types,
        poll_seconds=settings.events_poll_seconds,
        keepalive_seconds=settings.events_keepalive_seconds,
        disconnected=request.is_disconnected,
        allowed=allowed,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
