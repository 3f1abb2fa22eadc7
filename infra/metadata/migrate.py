"""Migrations of the metadata database (Alembic, in ``migrations/``), run by ``pgplane migrate``.

A database made by the first release (tables created at start-up, no ``alembic_version``) is
recognised by its ``projects`` table and stamped as revision 0001 before upgrading, so its data
stays. Processes never migrate: they check the revision at start and refuse to run against a
schema this release does not know (``SchemaOutOfDate``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

FIRST_RELEASE = "0001"
LOCK = "SELECT pg_advisory_xact_lock(hashtext('pgplane metadata migrations'))"


class SchemaOutOfDate(Exception):
    """The database is not at the revision this release needs."""


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this release needs."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def sync_url(dsn: str) -> sa.URL:
    return sa.make_url(dsn).set(drivername="postgresql+psycopg")


def upgrade(dsn: str) -> str:
    """Bring the database at ``dsn`` to ``head()``; returns the revision it was at (``""``: empty)."""
    engine = sa.create_engine(sync_url(dsn), poolclass=sa.NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(LOCK))  # two migrators at once: the second waits, then finds nothing to do
            inspector = sa.inspect(conn)
            before = _revision(conn)
            config = _config(conn)
            if before is None and inspector.has_table("projects"):
                command.stamp(config, FIRST_RELEASE)
                before = FIRST_RELEASE
            command.upgrade(config, "head")
        return before or ""
    finally:
        engine.dispose()


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


async def check(conn: AsyncConnection) -> None:
    """``SchemaOutOfDate`` unless the metadata database is at ``head()``."""
    found = await conn.run_sync(_revision)
    if found != head():
        raise SchemaOutOfDate(
            f"the metadata database is at revision {found or 'none'}, this release needs {head()}:"
            " run `pgplane migrate metadata`"
        )
