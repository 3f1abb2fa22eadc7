"""A project's public events: a page after a cursor, and the same as a Server-Sent Events stream
that resumes after ``Last-Event-ID`` with no gap and no duplicate (the cursor is the sequence)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from readmodel.tables import EVENTS
from schemas.public_events import EventType, PublicEvent, from_row

STREAM_PAGE = 500


async def events_after(
    conn: AsyncConnection, project_id: uuid.UUID, *, after: int, types: list[EventType], limit: int
) -> list[PublicEvent]:
    """The project's events numbered above ``after``, oldest first."""
    query = (
        sa.select(EVENTS)
        .where(EVENTS.c.project_id == project_id, EVENTS.c.sequence > after)
        .order_by(EVENTS.c.sequence)
        .limit(limit)
    )
    if types:
        query = query.where(EVENTS.c.type.in_(types))
    return [from_row(row) for row in await conn.execute(query)]


def server_sent(event: PublicEvent) -> str:
    """One SSE message: ``id`` the sequence, ``event`` the type, ``data`` the event (one line)."""
    return f"id: {event.sequence}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


async def event_stream(
    engine: AsyncEngine,
    project_id: uuid.UUID,
    *,
    after: int,
    types: list[EventType],
    poll_seconds: float,
    keepalive_seconds: float,
    disconnected: Callable[[], Awaitable[bool]],
    allowed: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Events as they are projected, then a comment whenever nothing was sent for a while. The
    caller's right to read is checked again as often: a revoked token ends the stream."""
    yield f"retry: {int(poll_seconds * 2000)}\n\n"
    sent_at = checked_at = time.monotonic()
    while not await disconnected():
        if time.monotonic() - checked_at >= keepalive_seconds:
            if not await allowed():
                return
            checked_at = time.monotonic()
        async with engine.connect() as conn:
            events = await events_after(conn, project_id, after=after, types=types, limit=STREAM_PAGE)
        for event in events:
            yield server_sent(event)
            after = event.sequence
        if events:
            sent_at = time.monotonic()
        elif time.monotonic() - sent_at >= keepalive_seconds:
            yield ": keep-alive\n\n"
            sent_at = time.monotonic()
        if len(events) < STREAM_PAGE:
            await asyncio.sleep(poll_seconds)
