"""``pgplane replay projection``: rebuild the read model from the events stream into a fresh
schema and compare it with the live one, table by table, by content hash; or, from a stream
sequence or a time, apply the events again to the live read model (``reproject``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.projector.service import BATCH, LIVE, YOUNG_OBJECTS, Read, project_batch, read, stored
from infra.batch_pull import BatchPull
from infra.collector import holding_batches
from readmodel.projection import apply_events
from readmodel.tables import CHECKPOINTS, READ_MODEL, create_tables
from schemas.subjects import Subjects


@dataclass(frozen=True)
class ReplayReport:
    schema: str
    up_to_sequence: int
    live: dict[str, str]
    replayed: dict[str, str]

    @property
    def matches(self) -> bool:
        return self.live == self.replayed


async def table_hashes(conn: AsyncConnection, schema: str) -> dict[str, str]:
    """One hash per table over its rows in key order and its columns in name order (a migrated
    table and a freshly created one may order their columns differently)."""
    hashes = {}
    for tbl in READ_MODEL:
        pk = ", ".join(f't."{c.name}"' for c in tbl.primary_key.columns)
        row = ", ".join(f't."{name}"' for name in sorted(c.name for c in tbl.columns))
        query = (
            f"SELECT md5(coalesce(string_agg(row({row})::text, chr(10) ORDER BY {pk}), '')) "
            f'FROM "{schema}"."{tbl.name}" t'
        )
        hashes[tbl.name] = (await conn.execute(sa.text(query))).scalar_one()
    return hashes


async def replay_projection(engine: AsyncEngine, nc: Client, subjects: Subjects, *, keep: bool = False) -> ReplayReport:
    """Replays up to the live checkpoint, so the comparison is of the same prefix of events: the
    live tables are hashed in the snapshot that reads the checkpoint (events keep arriving)."""
    schema = f"replay_{uuid.uuid4().hex[:12]}"
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            live_position = (
                await conn.execute(sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == LIVE))
            ).scalar_one_or_none() or 0
            live = await table_hashes(conn, "public")
    async with engine.begin() as conn:
        await create_tables(conn, schema)
    everything = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    async with reading(nc, subjects, everything) as pull:
        with holding_batches(YOUNG_OBJECTS):
            async for batch in batches(pull, up_to=live_position):
                async with engine.begin() as conn:
                    conn = await conn.execution_options(schema_translate_map={None: schema})
                    await project_batch(conn, batch)
    async with engine.begin() as conn:
        report = ReplayReport(schema, live_position, live, await table_hashes(conn, schema))
        if not keep:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return report


@dataclass(frozen=True)
class Reprojected:
    from_sequence: int
    to_sequence: int
    events: int


async def reproject(
    engine: AsyncEngine,
    nc: Client,
    subjects: Subjects,
    *,
    from_sequence: int | None = None,
    since: datetime | None = None,
) -> Reprojected:
    """Apply the events from ``from_sequence`` (or from the first at ``since``) up to the live
    checkpoint to the live read model again: what a lost or skipped batch should have written is
    written, and everything else is a no-op (each projection applies an event once). The live
    projector waits on its checkpoint row while each batch is applied; the checkpoint stays."""
    if (from_sequence is None) == (since is None):
        raise ValueError("give a stream sequence or a time to re-project from")
    async with engine.connect() as conn:
        live_position = (
            await conn.execute(sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == LIVE))
        ).scalar_one_or_none() or 0
    start = (
        ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_sequence)
        if from_sequence is not None
        else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
    )
    first, reached, applied = 0, 0, 0
    async with reading(nc, subjects, start) as pull:
        with holding_batches(YOUNG_OBJECTS):
            async for batch in batches(pull, up_to=live_position):
                first = first or batch[0][0]
                async with engine.begin() as conn:
                    await conn.execute(
                        sa.select(CHECKPOINTS.c.last_sequence).where(CHECKPOINTS.c.name == LIVE).with_for_update()
                    )
                    await apply_events(conn, [envelope for _, envelope in batch if envelope is not None])
                reached, applied = batch[-1][0], applied + len(batch)
    return Reprojected(first, reached, applied)


@contextlib.asynccontextmanager
async def reading(nc: Client, subjects: Subjects, start: ConsumerConfig) -> AsyncIterator[BatchPull]:
    """The events stream from ``start``, through a consumer of its own that acks nothing (deleted
    after; the server also drops it a minute after this process is gone)."""
    config = dataclasses.replace(
        start, filter_subject=subjects.all_events(), ack_policy=AckPolicy.NONE, inactive_threshold=60.0
    )
    js = nc.jetstream()
    consumer = (await js.add_consumer(subjects.events_stream, config)).name
    pull = await BatchPull(nc, subjects.events_stream, consumer).start()
    try:
        yield pull
    finally:
        await pull.stop()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(subjects.events_stream, consumer)


async def batches(pull: BatchPull, *, up_to: int) -> AsyncIterator[list[Read]]:
    """The stream's events in parsed batches, up to stream sequence ``up_to`` (fewer when no more
    come). The next batch is fetched and parsed while the caller applies this one, as the live
    projector does."""

    async def after(reached: int) -> list[Read]:
        if reached >= up_to:
            return []
        fetched = stored(await pull.fetch(BATCH, timeout=2.0))
        return read([(sequence, data) for sequence, data in fetched if sequence <= up_to])

    upcoming = asyncio.ensure_future(after(0))
    try:
        while batch := await upcoming:
            upcoming = asyncio.ensure_future(after(batch[-1][0]))
            yield batch
    finally:
        upcoming.cancel()
