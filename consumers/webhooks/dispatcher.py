"""The webhook dispatcher: each project's public events, in sequence order, to its endpoints.

Public events get their numbers in the projector's transaction, so the ``events`` table is the
ordered, durable stream; each endpoint keeps a cursor in it. One loop, woken by the ``events``
table's notification (or every ``webhook_poll_seconds``):

1. queue: the events past each enabled endpoint's cursor (of the types it asked for) become
   ``pending`` deliveries, and the cursor moves, in one transaction;
2. claim: due deliveries with no earlier pending delivery of the same database for the same
   endpoint (a failing event holds back later events of its database only) are leased, their
   attempt counted, in one transaction (``SKIP LOCKED``: several dispatchers share the work);
3. send (``infra.webhook_sender``): the address guard checks the URL again and the request goes
   to the address it checked, signed; the outcome and the attempt are recorded. Each attempt is
   a span in the trace of the request that caused the event, and the request carries its
   ``traceparent``.

A dispatcher that dies mid-send leaves a lease (twice the send timeout) that runs out, and the event is sent again with
the same ``webhook-id``: receivers dedupe by it. 2xx delivers; 410 disables the endpoint; any
other answer is retried on the schedule (``Retry-After`` honoured), and an endpoint that has
failed for ``webhook_disable_after_seconds`` is disabled; a ``webhook.endpoint_disabled`` event
goes through the outbox (relayed by the API) to the projector, which numbers it like any other.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import Attributes
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra import tracing
from infra.faults import NO_FAULTS, Faults
from infra.metadata.notifications import listening
from infra.metadata.tables import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS, pending_delivery
from infra.metrics import WEBHOOK_OUTCOMES, WEBHOOK_SECONDS
from infra.secrets import SecretBox
from infra.settings import Settings
from infra.webhook_sender import Outcome, WebhookSender
from infra.webhook_signing import endpoint_secrets
from producers.commands import queue_event
from readmodel.tables import EVENTS
from schemas.envelope import Envelope
from schemas.events import WebhookEndpointDisabled
from schemas.public_events import from_row
from schemas.subjects import Subjects

log = logging.getLogger("pgplane.webhooks")
QUEUE_BATCH = 1000
CLAIM_BATCH = 50


@dataclass(frozen=True)
class Schedule:
    """Seconds to wait before each attempt after a failure, jittered by 10%."""

    delays: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        return cls(tuple(float(part) for part in text.split(",")))

    def after_failure(self, attempts: int) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; ``None``: give up."""
        if attempts >= len(self.delays):
            return None
        return self.delays[attempts] * random.uniform(0.9, 1.1)


@dataclass(frozen=True)
class Claimed:
    endpoint_id: uuid.UUID
    project_id: uuid.UUID
    event_id: uuid.UUID
    attempts: int
    url: str
    secrets: list[str]
    body: bytes
    traceparent: str | None
    """The trace context of the event's cause (the ``events`` row's)."""


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        box: SecretBox,
        settings: Settings,
        sender: WebhookSender,
        faults: Faults = NO_FAULTS,
    ) -> None:
        self._engine = engine
        self._box = box
        self._settings = settings
        self._sender = sender
        self._faults = faults
        self._schedule = Schedule.parse(settings.webhook_retry_schedule)
        self._subjects = Subjects(namespace=settings.namespace)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("webhook dispatcher running")
        async with listening(self._engine) as wakeup:
            stopping = asyncio.ensure_future(stop.wait())
            stopping.add_done_callback(wakeup.notified)
            while not stop.is_set():
                busy = False
                try:
                    busy = await self.queue() > 0
                    busy = await self.send_due() > 0 or busy
                except Exception:
                    log.exception("a dispatcher round failed; trying again")
                if not busy:
                    await wakeup.wait(self._settings.webhook_poll_seconds)

    async def queue(self) -> int:
        """New events of every enabled endpoint's project become pending deliveries.

        One statement reads them for all the endpoints at once (up to ``QUEUE_BATCH`` each, the
        endpoints locked, skipping those another dispatcher holds), so a wake-up costs the same
        few statements whatever the number of endpoints on the platform."""
        endpoints = WEBHOOK_ENDPOINTS
        new = (
            sa.select(EVENTS.c.id, EVENTS.c.sequence, EVENTS.c.type, EVENTS.c.data)
            .where(EVENTS.c.project_id == endpoints.c.project_id, EVENTS.c.sequence > endpoints.c.last_sequence)
            .order_by(EVENTS.c.sequence)
            .limit(QUEUE_BATCH)
            .lateral("new")
        )
        found = (
            sa.select(endpoints.c.id.label("endpoint_id"), endpoints.c.project_id, endpoints.c.event_types, new)
            .select_from(endpoints.join(new, sa.true()))
            .where(endpoints.c.status == "enabled")
            .order_by(endpoints.c.id, new.c.sequence)
            .with_for_update(of=endpoints, skip_locked=True)
        )
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            rows, reached = [], {}
            for event in (await conn.execute(found)).all():
                reached[event.endpoint_id] = event.sequence
                if not event.event_types or event.type in event.event_types:
                    rows.append(pending_delivery(event.endpoint_id, event.project_id, event, now))
            if rows:
                await conn.execute(insert(WEBHOOK_DELIVERIES).on_conflict_do_nothing(), rows)
            if reached:
                await conn.execute(
                    sa.update(endpoints)
                    .where(endpoints.c.id == sa.bindparam("endpoint"))
                    .values(last_sequence=sa.bindparam("reached")),
                    [{"endpoint": endpoint, "reached": sequence} for endpoint, sequence in reached.items()],
                )
        return len(rows)

    async def send_due(self) -> int:
        """Send what is due at once, then record every outcome in one transaction."""
        claimed = await self.claim()
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(c) for c in claimed))
        self._faults.crash_point("webhooks.sent")
        async with self._engine.begin() as conn:
            for one, outcome in zip(claimed, outcomes, strict=True):
                await self.record(conn, one, outcome)
        return len(claimed)

    async def claim(self) -> list[Claimed]:
        """Lease the due deliveries that are first in line for their database."""
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=2 * self._settings.webhook_timeout_seconds)  # a send takes at most one
        d, earlier = WEBHOOK_DELIVERIES.alias("d"), WEBHOOK_DELIVERIES.alias("earlier")
        first_in_line = ~sa.exists(
            sa.select(1).where(
                earlier.c.endpoint_id == d.c.endpoint_id,
                earlier.c.ordering_key == d.c.ordering_key,
                earlier.c.sequence < d.c.sequence,
                earlier.c.status == "pending",
            )
        )
        enabled = sa.exists(
            sa.select(1).where(WEBHOOK_ENDPOINTS.c.id == d.c.endpoint_id, WEBHOOK_ENDPOINTS.c.status == "enabled")
        )
        async with self._engine.begin() as conn:
            due = (
                await conn.execute(
                    sa.select(d.c.endpoint_id, d.c.event_id, d.c.attempts, d.c.project_id, d.c.sequence)
                    .where(d.c.status == "pending", d.c.next_attempt_at <= now, first_in_line, enabled)
                    .order_by(d.c.next_attempt_at)
                    .limit(CLAIM_BATCH)
                    .with_for_update(of=d, skip_locked=True)
                )
            ).all()
            if not due:
                return []
            keys = [(row.endpoint_id, row.event_id) for row in due]
            await conn.execute(
                sa.update(WEBHOOK_DELIVERIES)
                .where(sa.tuple_(WEBHOOK_DELIVERIES.c.endpoint_id, WEBHOOK_DELIVERIES.c.event_id).in_(keys))
                .values(next_attempt_at=lease, attempts=WEBHOOK_DELIVERIES.c.attempts + 1)
            )
            endpoints = {
                e.id: e
                for e in await conn.execute(
                    sa.select(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id.in_({row.endpoint_id for row in due}))
                )
            }
            events = {
                (e.project_id, e.sequence): e
                for e in await conn.execute(
                    sa.select(EVENTS).where(
                        sa.tuple_(EVENTS.c.project_id, EVENTS.c.sequence).in_({(r.project_id, r.sequence) for r in due})
                    )
                )
            }
        secrets = {i: endpoint_secrets(self._box, e, now) for i, e in endpoints.items()}
        claimed = [
            Claimed(
                endpoint_id=row.endpoint_id,
                project_id=row.project_id,
                event_id=row.event_id,
                attempts=row.attempts + 1,
                url=endpoints[row.endpoint_id].url,
                secrets=secrets[row.endpoint_id],
                body=from_row(events[(row.project_id, row.sequence)]).model_dump_json().encode(),
                traceparent=events[(row.project_id, row.sequence)].traceparent,
            )
            for row in due
        ]
        return claimed

    async def _send(self, claimed: Claimed) -> Outcome:
        attributes: Attributes = {
            "pgplane.endpoint_id": str(claimed.endpoint_id),
            "pgplane.event_id": str(claimed.event_id),
            "pgplane.attempt": claimed.attempts,
        }
        with tracing.span(
            "deliver webhook", parent=claimed.traceparent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            outcome = await self._sender.send(
                claimed.url, claimed.secrets, msg_id=str(claimed.event_id), body=claimed.body
            )
            if outcome.status_code is not None:
                span.set_attribute("http.response.status_code", outcome.status_code)
            if not outcome.delivered:
                span.set_status(StatusCode.ERROR, outcome.error or f"answered {outcome.status_code}")
            return outcome

    async def record(self, conn: AsyncConnection, claimed: Claimed, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        delivered = outcome.delivered
        gone = outcome.status_code == 410
        WEBHOOK_SECONDS.observe(outcome.duration_ms / 1000)
        next_attempt: datetime | None = None
        delivery: dict[str, Any] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
        endpoint: dict[str, Any] = {}
        if delivered:
            delivery |= {"status": "delivered", "delivered_at": now}
            endpoint["failing_since"] = None
            WEBHOOK_OUTCOMES.labels(outcome="delivered").inc()
        elif gone:
            WEBHOOK_OUTCOMES.labels(outcome="gone").inc()
            delivery["status"] = "failed"
            endpoint |= {"status": "disabled", "disabled_reason": "the endpoint answered 410 Gone"}
        else:
            delay = self._schedule.after_failure(claimed.attempts)
            if delay is not None and outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            if delay is None:
                delivery["status"] = "failed"
                WEBHOOK_OUTCOMES.labels(outcome="gave_up").inc()
            else:
                WEBHOOK_OUTCOMES.labels(outcome="retry").inc()
                next_attempt = now + timedelta(seconds=delay)
                delivery["next_attempt_at"] = next_attempt
        await conn.execute(
            sa.update(WEBHOOK_DELIVERIES)
            .where(WEBHOOK_DELIVERIES.c.endpoint_id == claimed.endpoint_id)
            .where(WEBHOOK_DELIVERIES.c.event_id == claimed.event_id)
            .values(delivery)
        )
        await conn.execute(
            sa.insert(WEBHOOK_ATTEMPTS).values(
                id=uuid.uuid4(),
                endpoint_id=claimed.endpoint_id,
                event_id=claimed.event_id,
                attempted_at=now,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                next_attempt_at=next_attempt,
            )
        )
        if not delivered and not gone:
            endpoint |= await self._failing(conn, claimed.endpoint_id, now)
        if endpoint.get("status") == "disabled":
            await self._disable(conn, claimed, endpoint["disabled_reason"], now)
        elif endpoint:
            endpoint["updated_at"] = now
            await conn.execute(
                sa.update(WEBHOOK_ENDPOINTS).where(WEBHOOK_ENDPOINTS.c.id == claimed.endpoint_id).values(endpoint)
            )

    async def _disable(self, conn: AsyncConnection, claimed: Claimed, reason: str, now: datetime) -> None:
        """Disable the endpoint and announce it (``webhook.endpoint_disabled``), once however many
        deliveries fail at the same time."""
        disabled = await conn.execute(
            sa.update(WEBHOOK_ENDPOINTS)
            .where(WEBHOOK_ENDPOINTS.c.id == claimed.endpoint_id, WEBHOOK_ENDPOINTS.c.status == "enabled")
            .values(status="disabled", disabled_reason=reason, updated_at=now)
            .returning(WEBHOOK_ENDPOINTS.c.id)
        )
        if disabled.first() is None:
            return
        log.warning("webhook endpoint %s disabled: %s", claimed.endpoint_id, reason)
        event = Envelope.wrap(
            WebhookEndpointDisabled(endpoint_id=claimed.endpoint_id, reason=reason),
            correlation_id=uuid.uuid4(),
            sequence=0,
            actor="webhooks",
            project_id=claimed.project_id,
            occurred_at=now,
        )
        await queue_event(conn, self._subjects, event)

    async def _failing(self, conn: AsyncConnection, endpoint_id: uuid.UUID, now: datetime) -> dict[str, Any]:
        since = (
            await conn.execute(
                sa.select(WEBHOOK_ENDPOINTS.c.failing_since).where(WEBHOOK_ENDPOINTS.c.id == endpoint_id)
            )
        ).scalar_one_or_none()
        if since is None:
            return {"failing_since": now}
        if (now - since).total_seconds() >= self._settings.webhook_disable_after_seconds:
            return {"status": "disabled", "disabled_reason": f"every delivery has failed since {since.isoformat()}"}
        return {}
