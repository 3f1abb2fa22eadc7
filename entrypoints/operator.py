"""Operator actions: migrations, bus topology and replay, each with the metadata database and the
bus as the operator (``pgplane ops`` runs through ``entrypoints.ops.run_ops``)."""

from __future__ import annotations

from datetime import datetime

import psycopg
import sqlalchemy as sa

from consumers.agent import ledger_schema
from consumers.projector.replay import ReplayReport, Reprojected, replay_projection
from consumers.projector.replay import reproject as reproject_events
from entrypoints.bootstrap import bus
from entrypoints.control_plane import metadata
from infra.errors import Unreachable
from infra.metadata import migrate
from infra.metadata.engine import where
from infra.settings import Settings
from infra.topology import ensure_topology
from schemas.subjects import Subjects


async def setup_bus(settings: Settings) -> list[str]:
    """Create or update every stream and durable consumer (the operator role); returns their names."""
    async with bus(settings, fail_fast=True) as nc:
        return await ensure_topology(nc.jetstream(), settings)


def migrate_metadata(settings: Settings) -> str:
    """Bring the metadata database to this release's schema; returns the revision it was at."""
    try:
        return migrate.upgrade(settings.metadata_dsn)
    except sa.exc.OperationalError as exc:
        raise Unreachable(f"the metadata database at {where(settings.metadata_dsn)}: {exc.orig}") from exc


async def migrate_ledger(settings: Settings) -> tuple[int, int]:
    """Bring this data host's ledger to this release's schema; returns the versions before and after."""
    try:
        connection = await psycopg.AsyncConnection.connect(settings.ledger_dsn, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"the agent ledger at {where(settings.ledger_dsn)}: {exc}") from exc
    async with connection as conn:
        return await ledger_schema.migrate(conn)


async def replay(settings: Settings, *, keep: bool = False) -> ReplayReport:
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        return await replay_projection(engine, nc, Subjects(namespace=settings.namespace), keep=keep)


async def reproject(settings: Settings, *, from_sequence: int | None, since: datetime | None) -> Reprojected:
    async with metadata(settings, pool_size=1) as engine, bus(settings, fail_fast=True) as nc:
        subjects = Subjects(namespace=settings.namespace)
        return await reproject_events(engine, nc, subjects, from_sequence=from_sequence, since=since)
