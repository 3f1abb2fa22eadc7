"""The projector process: fetch a batch of events, apply them, the audit rows and the
checkpoint in ONE transaction (a few multi-row statements, ``readmodel.batch``), and ack only
after it commits.

Events are "written atomically and uniquely with tracking information about the position of
the processed event": a batch redelivered after a crash is skipped up to the checkpoint. That
needs the events in stream order, and a durable consumer does not promise it after a crash: the
batch a dead projector held comes back only when its ack wait runs out, after the events behind
it. So a batch that starts past the event after the checkpoint first reads the events in between
straight from the stream (``StreamReader``); the late redelivery is then below the checkpoint.

While one batch commits, the next is already being fetched and parsed.

When this process records traces, each applied event that carries a ``traceparent`` gets a span
in its trace, from the start of its batch to the commit; when it does not, batches skip this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra import tracing
from infra.batch_pull import BatchPull, stream_sequence
from infra.collector import holding_batches
from infra.metrics import CONSUMER_PENDING, EVENTS_PROJECTED, PROJECTOR_BATCH_SECONDS
from readmodel.batch import qualified
from readmodel.projection import apply_events
from readmodel.tables import CHECKPOINTS
from schemas.envelope import Envelope

log = logging.getLogger("pgplane.projector")
BATCH = 1000
YOUNG_OBJECTS = 100 * BATCH
"""The cycle collector's young threshold while batches run (``infra.collector``): above what a
batch being applied and the next one being parsed hold together (53 objects per event, measured)."""
LIVE = "live"

Stored = tuple[int, bytes]
"""An event as the stream holds it: its stream sequence and its body."""
Read = tuple[int, Envelope | None]
"""An event as parsed: its stream sequence and its envelope (``None``: unreadable, and logged)."""
ReadBetween = Callable[[int, int], Awaitable[list[Stored]]]
"""The stored events with sequences strictly between two sequences, in order."""


class Projected(NamedTuple):
    checkpoint: int
    events: list[Envelope]
    """The events applied, in order."""


class StreamReader:
    """Reads events from the stream by sequence, past any deleted or expired ones."""

    def __init__(self, js: JetStreamContext, stream: str, subjects: str) -> None:
        self._js = js
        self._stream = stream
        self._subjects = subjects

    async def between(self, after: int, before: int) -> list[Stored]:
        found: list[Stored] = []
        while True:
            try:
                stored = await self._js.get_msg(self._stream, seq=after + 1, subject=self._subjects, next=True)
            except NotFoundError:
                return found
            if stored.seq is None or stored.seq >= before:
                return found
            found.append((stored.seq, stored.data or b""))
            after = stored.seq


async def project_batch(
    conn: AsyncConnection,
    events: list[Read],
    *,
    checkpoint_name: str = LIVE,
    read_between: ReadBetween | None = None,
) -> Projected:
    """Apply the events above the checkpoint; returns the new checkpoint and the events applied
    (caller commits).

    With ``read_between``, events missing between the checkpoint and an event are read first.
    """
    last = await advance_checkpoint(conn, checkpoint_name, max((sequence for sequence, _ in events), default=0))
    applied = []
    for sequence, envelope in sorted(events, key=lambda event: event[0]):
        if sequence <= last:
            continue
        missing = read(await read_between(last, sequence)) if read_between and sequence > last + 1 else []
        if missing:
            log.warning("events %d to %d came out of order; read them from the stream", missing[0][0], missing[-1][0])
        for read_sequence, read_envelope in [*missing, (sequence, envelope)]:
            if read_envelope is not None:
                applied.append(read_envelope)
            last = read_sequence
    await apply_events(conn, applied)
    return Projected(int(last), applied)


async def advance_checkpoint(conn: AsyncConnection, name: str, to: int) -> int:
    """Lock the checkpoint ``name`` until the transaction ends, move it up to ``to`` (never down),
    and return where it was: one round trip. Once per batch, so a batch of one event (the normal
    case) costs one statement less than reading it first and writing it after the events.

    Under READ COMMITTED a second projector waits on the lock, then reads the row as the first
    one's commit left it (``FOR UPDATE`` returns the latest version), so each skips what the
    other applied."""
    table = qualified(conn, CHECKPOINTS)
    advance = (
        f"WITH before AS (SELECT last_sequence FROM {table} WHERE name = $1 FOR UPDATE) "
        f"UPDATE {table} AS c SET last_sequence = greatest(before.last_sequence, $2) "
        "FROM before WHERE c.name = $1 RETURNING before.last_sequence"
    )
    previous = (await conn.exec_driver_sql(advance, (name, to))).scalar_one_or_none()
    if previous is None:  # the first batch ever (or of a replay): make the row, then take it as above
        await conn.exec_driver_sql(
            f"INSERT INTO {table} (name, last_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING", (name,)
        )
        previous = (await conn.exec_driver_sql(advance, (name, to))).scalar_one()
    return int(previous)


def read(stored: Iterable[Stored]) -> list[Read]:
    """Parse stored events; an unreadable one is logged, and skipped when its turn comes."""
    events: list[Read] = []
    for sequence, data in stored:
        try:
            events.append((sequence, Envelope.model_validate_json(data)))
        except (ValidationError, ValueError) as exc:
            log.error("skipping unreadable event at stream sequence %d: %s", sequence, exc)
            events.append((sequence, None))
    return events


def stored(msgs: list[Msg]) -> list[Stored]:
    return [(stream_sequence(msg), msg.data) for msg in msgs]


class Projector:
    """Consumes the events stream through its durable pull consumer."""

    def __init__(self, engine: AsyncEngine, pull: BatchPull, reader: StreamReader) -> None:
        self._engine = engine
        self._pull = pull
        self._reader = reader

    async def run(self, stop: asyncio.Event) -> None:
        log.info("projector consuming")
        fetching = asyncio.ensure_future(self._fetch())
        try:
            with holding_batches(YOUNG_OBJECTS):
                while not stop.is_set():
                    msgs, events = await fetching
                    fetching = asyncio.ensure_future(self._fetch())
                    if msgs:
                        await self._apply_until_committed(msgs, events, stop)
        finally:
            fetching.cancel()  # a batch fetched but not applied comes back after its ack wait

    async def _fetch(self) -> tuple[list[Msg], list[Read]]:
        """The next batch, parsed here: while the batch before it waits on PostgreSQL."""
        msgs = await self._pull.fetch(BATCH, timeout=1.0)
        return msgs, read(stored(msgs))

    async def _apply_until_committed(self, msgs: list[Msg], events: list[Read], stop: asyncio.Event) -> None:
        """Retry the same batch: fetching past it could move the checkpoint over unapplied events."""
        while not stop.is_set():
            try:
                started = time.time_ns()
                with PROJECTOR_BATCH_SECONDS.time():
                    async with self._engine.begin() as conn:
                        projected = await project_batch(conn, events, read_between=self._reader.between)
                for msg in msgs:
                    await msg.ack()
                EVENTS_PROJECTED.inc(len(msgs))
                CONSUMER_PENDING.labels(consumer="projector").set(msgs[-1].metadata.num_pending)
                if tracing.enabled():
                    trace_applied(projected.events, started, time.time_ns())
                return
            except Exception:
                log.exception("projecting a batch failed; retrying it")
                await asyncio.sleep(1)


def trace_applied(events: Sequence[Envelope], start_ns: int, end_ns: int) -> None:
    """A span per applied event that carries a trace context, in that trace: its batch's time."""
    for env in events:
        if env.traceparent is not None:
            tracing.record_span(
                f"project {env.type}",
                parent=env.traceparent,
                start_ns=start_ns,
                end_ns=end_ns,
                kind=SpanKind.CONSUMER,
                attributes={"pgplane.event_id": str(env.id), "pgplane.batch_size": len(events)},
            )
