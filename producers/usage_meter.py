"""Usage to Stripe: each finished hour of each subscribed organization's database time, sent as one
meter event (database-minutes) to bill by.

The event's identifier is ``<organization>:<hour>``. Stripe keeps one event per identifier, so an
hour sent again (the process died after sending, before recording it) is not billed twice. An hour
is recorded once sent; each run sends every finished hour not yet recorded, from the later of the
organization's creation and ``BACKFILL`` ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import stripe
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.metadata.tables import ORGANIZATIONS, USAGE_REPORTS
from infra.settings import Settings
from readmodel.tables import PROJECTS
from readmodel.usage import database_seconds

log = logging.getLogger("pgplane.usage")
HOUR = timedelta(hours=1)
BACKFILL = timedelta(hours=24)
"""How far back an hour is still sent (Stripe takes meter events up to 35 days old)."""


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def identifier(organization_id: object, hour: datetime) -> str:
    return f"{organization_id}:{hour:%Y-%m-%dT%H}"


class UsageMeter:
    def __init__(self, engine: AsyncEngine, settings: Settings, client: stripe.StripeClient) -> None:
        self._engine = engine
        self._settings = settings
        self._client = client

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.report(datetime.now(UTC))
            except Exception:
                log.exception("reporting usage to Stripe failed; the next run sends the hours again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.usage_report_seconds)

    async def report(self, now: datetime) -> int:
        """Send every finished, unsent hour; the number sent."""
        current = hour_of(now)
        async with self._engine.connect() as conn:
            organizations = (
                await conn.execute(
                    sa.select(ORGANIZATIONS.c.id, ORGANIZATIONS.c.stripe_customer_id, ORGANIZATIONS.c.created_at).where(
                        ORGANIZATIONS.c.stripe_customer_id.is_not(None)
                    )
                )
            ).all()
        sent = 0
        for organization in organizations:
            first = max(hour_of(organization.created_at), current - BACKFILL)
            async with self._engine.connect() as conn:
                done = set(
                    (
                        await conn.execute(
                            sa.select(USAGE_REPORTS.c.hour).where(
                                USAGE_REPORTS.c.organization_id == organization.id, USAGE_REPORTS.c.hour >= first
                            )
                        )
                    ).scalars()
                )
            hour = first
            while hour < current:
                if hour not in done:
                    await self._send(organization.id, str(organization.stripe_customer_id), hour)
                    sent += 1
                hour += HOUR
        return sent

    async def _send(self, organization_id: object, customer: str, hour: datetime) -> None:
        async with self._engine.connect() as conn:
            projects = (
                (await conn.execute(sa.select(PROJECTS.c.id).where(PROJECTS.c.organization_id == organization_id)))
                .scalars()
                .all()
            )
            seconds = await database_seconds(conn, projects, hour, hour + HOUR)
        minutes = round(seconds / 60)
        await self._client.v1.billing.meter_events.create_async(
            {
                "event_name": self._settings.stripe_meter_event,
                "identifier": identifier(organization_id, hour),
                "timestamp": int((hour + HOUR - timedelta(seconds=1)).timestamp()),
                "payload": {"stripe_customer_id": customer, "value": str(minutes)},
            }
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(USAGE_REPORTS)
                .values(
                    organization_id=organization_id, hour=hour, database_minutes=minutes, reported_at=datetime.now(UTC)
                )
                .on_conflict_do_nothing()
            )
