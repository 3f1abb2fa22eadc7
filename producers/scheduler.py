"""The backup scheduler: one backup command per schedule slot, ``backup.missed`` for slots that
passed without a completed backup, and retention. Settled slots are forgotten after a week.

Any number of replicas may run. A slot is claimed by inserting ``(database, slot)`` into
``backup_slots`` in the same transaction that queues the backup (outbox): the primary key lets
exactly one replica win, the others' inserts do nothing. Ids derive from the slot, so even a
replayed claim would publish the same messages, which the bus drops as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.metadata.tables import SLOTS
from infra.plans import entitlements
from infra.settings import Settings
from producers.backup_schedule import slots_between
from producers.backups import request_backup, request_backup_deletion
from producers.commands import Outbox, OutboxRelay
from readmodel.tables import BACKUPS, DATABASES, GONE, POLICIES, PROJECTS, BackupStatus, DatabaseStatus, project_plan
from schemas.envelope import Envelope
from schemas.events import BackupMissed

log = logging.getLogger("pgplane.scheduler")
ACTOR = "scheduler"
SETTLED_SLOTS_KEPT = timedelta(days=7)
"""How long a settled slot (its backup completed, or it was reported missed) stays on record."""
PRUNE_EVERY = timedelta(hours=1)
BACKED_UP = (BackupStatus.COMPLETED, BackupStatus.DELETING, BackupStatus.DELETED)
"""A slot's backup in one of these completed (retention may have removed it since): nothing to report."""


class BackupScheduler:
    def __init__(self, engine: AsyncEngine, settings: Settings, outbox: Outbox) -> None:
        self._engine = engine
        self._settings = settings
        self._outbox = outbox
        self._pruned_at: datetime | None = None

    async def run(self, stop: asyncio.Event, relay: OutboxRelay) -> None:
        """A pass every ``scheduler_interval_seconds``; what it queued is published right after."""
        log.info("backup scheduler running every %g s", self._settings.scheduler_interval_seconds)
        while not stop.is_set():
            await self.tick(datetime.now(UTC))
            try:
                await relay.drain()
            except Exception:
                log.exception("publishing scheduled commands failed; the next pass retries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.scheduler_interval_seconds)

    async def tick(self, now: datetime) -> None:
        """One pass over every policy: claim due slots, report missed ones, retain.

        One statement reads every policy with what tells whether it has anything to do
        (``_policies_with_work_signs``); only a policy that has opens a transaction, and there the work is
        decided again on fresh rows. A fleet whose policies have nothing due costs a pass one
        statement, not a transaction of four per database."""
        async with self._engine.connect() as conn:
            policies = (await conn.execute(_policies_with_work_signs())).all()
        for policy in policies:
            if not self._has_work(policy, now):
                continue
            try:
                async with self._engine.begin() as conn:
                    if policy.schedule is not None:
                        await self._claim_slots(conn, policy, now)
                        await self._report_missed(conn, policy, now)
                    await self._retain(conn, policy, now)
            except Exception:
                log.exception("scheduling database %s failed; next pass retries", policy.database_id)
        try:
            async with self._engine.begin() as conn:
                await self._purge_deleted(conn, now)
        except Exception:
            log.exception("purging the backups of deleted databases failed; next pass retries")
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            try:
                async with self._engine.begin() as conn:
                    await _prune_settled_slots(conn, now)
                self._pruned_at = now
            except Exception:
                log.exception("pruning settled backup slots failed; a later pass retries")

    def _has_work(self, policy: Row[Any], now: datetime) -> bool:
        """Whether ``policy`` has anything due, read from its signs: exactly what its transaction
        would find then (a slot, a backup or a report that comes after the signs were read waits
        for the next pass, as it would had it come after this pass)."""
        if policy.schedule is not None:
            if slots_between(policy.schedule, claim_start(policy.updated_at, policy.last_slot), now):
                return True
            overdue = now - timedelta(seconds=self._settings.backup_missed_after_seconds)
            if policy.oldest_unreported is not None and policy.oldest_unreported < overdue:
                return True
        expired = now - timedelta(days=policy.retain_days)
        return bool(policy.completed > policy.keep_last and policy.oldest_completed < expired)

    async def _purge_deleted(self, conn: AsyncConnection, now: datetime) -> None:
        """A deleted database's backups stay restorable (into a new database) for its plan's backup
        retention after the deletion, then go, each with its own deletion operation."""
        rows = (
            await conn.execute(
                sa.select(BACKUPS, DATABASES.c.deleted_at, project_plan())
                .join(DATABASES, DATABASES.c.id == BACKUPS.c.database_id)
                .join(PROJECTS, PROJECTS.c.id == BACKUPS.c.project_id)
                .where(
                    DATABASES.c.status == DatabaseStatus.DELETED,
                    DATABASES.c.deleted_at.is_not(None),
                    BACKUPS.c.status.in_([BackupStatus.COMPLETED, BackupStatus.FAILED]),
                )
                .with_for_update(of=BACKUPS, skip_locked=True)
            )
        ).all()
        for backup in rows:
            if (
                backup.deleted_at + timedelta(days=entitlements(self._settings, backup.plan).backup_retention_days)
                > now
            ):
                continue
            database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == backup.database_id))).one()
            await request_backup_deletion(
                conn,
                self._outbox,
                backup=backup,
                database=database,
                actor=ACTOR,
                reason="retention",
                operation_id=uuid.uuid5(backup.id, "retention"),
            )

    async def _claim_slots(self, conn: AsyncConnection, policy: Row[Any], now: datetime) -> None:
        last = (
            await conn.execute(sa.select(sa.func.max(SLOTS.c.slot)).where(SLOTS.c.database_id == policy.database_id))
        ).scalar()
        due = slots_between(policy.schedule, claim_start(policy.updated_at, last), now)
        for slot in due:
            latest = slot == due[-1]
            claimed = await conn.execute(
                insert(SLOTS)
                .values(database_id=policy.database_id, slot=slot, missed_at=None if latest else now)
                .on_conflict_do_nothing()
            )
            if not claimed.rowcount:
                continue  # another replica has it
            if not latest:
                await self._missed(conn, policy, slot, "the scheduler was not running at this slot")
                continue
            database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == policy.database_id))).one()
            backup_id = uuid.uuid5(policy.database_id, f"backup@{slot.isoformat()}")
            operation_id, _ = await request_backup(
                conn,
                self._outbox,
                database=database,
                max_bytes=entitlements(self._settings, policy.plan).backup_max_bytes,
                actor=ACTOR,
                trigger="schedule",
                backup_id=backup_id,
                operation_id=uuid.uuid5(backup_id, "backup"),
            )
            await conn.execute(
                sa.update(SLOTS)
                .where(SLOTS.c.database_id == policy.database_id, SLOTS.c.slot == slot)
                .values(operation_id=operation_id)
            )

    async def _report_missed(self, conn: AsyncConnection, policy: Row[Any], now: datetime) -> None:
        overdue = now - timedelta(seconds=self._settings.backup_missed_after_seconds)
        rows = (
            await conn.execute(
                sa.select(SLOTS.c.slot, BACKUPS.c.status, BACKUPS.c.error)
                .join(BACKUPS, _slot_backup(), isouter=True)
                .where(
                    SLOTS.c.database_id == policy.database_id,
                    SLOTS.c.missed_at.is_(None),
                    SLOTS.c.slot < overdue,
                    _not_backed_up(),
                )
                .with_for_update(of=SLOTS, skip_locked=True)
            )
        ).all()
        for row in rows:
            reason = f"the backup {row.status}" + (f": {row.error}" if row.error else "") if row.status else ""
            await conn.execute(
                sa.update(SLOTS)
                .where(SLOTS.c.database_id == policy.database_id, SLOTS.c.slot == row.slot)
                .values(missed_at=now)
            )
            await self._missed(conn, policy, row.slot, reason or "no backup was taken")

    async def _missed(self, conn: AsyncConnection, policy: Row[Any], slot: datetime, reason: str) -> None:
        event = Envelope.wrap(
            BackupMissed(database_id=policy.database_id, slot=slot, reason=reason),
            correlation_id=uuid.uuid5(policy.database_id, f"missed@{slot.isoformat()}"),
            sequence=0,
            actor=ACTOR,
            project_id=policy.project_id,
        )
        await self._outbox.event(conn, event)

    async def _retain(self, conn: AsyncConnection, policy: Row[Any], now: datetime) -> None:
        """Completed backups past ``retain_days``, except the newest ``keep_last``, are deleted."""
        completed = (
            await conn.execute(
                sa.select(BACKUPS)
                .where(BACKUPS.c.database_id == policy.database_id, BACKUPS.c.status == BackupStatus.COMPLETED)
                .order_by(BACKUPS.c.created_at.desc())
                .with_for_update(skip_locked=True)
            )
        ).all()
        cutoff = now - timedelta(days=policy.retain_days)
        expired = [b for b in completed[policy.keep_last :] if b.created_at < cutoff]
        if not expired:
            return
        database = (await conn.execute(sa.select(DATABASES).where(DATABASES.c.id == policy.database_id))).one()
        for backup in expired:
            await request_backup_deletion(
                conn,
                self._outbox,
                backup=backup,
                database=database,
                actor=ACTOR,
                reason="retention",
                operation_id=uuid.uuid5(backup.id, "retention"),
            )


def claim_start(updated_at: datetime, last_slot: datetime | None) -> datetime:
    """Slots after this are claimed: the last claimed one, or when the policy was set if later."""
    return max(updated_at, last_slot) if last_slot else updated_at


def _slot_backup() -> sa.ColumnElement[bool]:
    """A slot's backup: the one its operation makes (of the slot's database, which lets the join
    use the backups' index on ``database_id``)."""
    return sa.and_(BACKUPS.c.operation_id == SLOTS.c.operation_id, BACKUPS.c.database_id == SLOTS.c.database_id)


def _not_backed_up() -> sa.ColumnElement[bool]:
    """A slot (joined to its backup) whose backup has not completed: none yet, or one still running or failed."""
    return sa.or_(BACKUPS.c.status.is_(None), BACKUPS.c.status.not_in(BACKED_UP))


async def _prune_settled_slots(conn: AsyncConnection, now: datetime) -> None:
    """Forget the slots settled more than ``SETTLED_SLOTS_KEPT`` ago (their backup completed, or
    they were reported missed): nothing reads them again, and every pass's work signs read a
    policy's slots, one per schedule slot for as long as the policy runs. A database's newest
    slot stays whatever its age: claims start after it."""
    newer = SLOTS.alias("newer")
    newest = sa.select(sa.func.max(newer.c.slot)).where(newer.c.database_id == SLOTS.c.database_id)
    backed_up = sa.exists().where(_slot_backup(), BACKUPS.c.status.in_(BACKED_UP))
    settled = sa.or_(SLOTS.c.missed_at.is_not(None), backed_up)
    await conn.execute(
        sa.delete(SLOTS).where(
            SLOTS.c.slot < now - SETTLED_SLOTS_KEPT, SLOTS.c.slot < newest.scalar_subquery(), settled
        )
    )


def _policies_with_work_signs() -> sa.Select[Any]:
    """Every policy of a live database, with its plan and its work signs: its last claimed slot
    (``last_slot``), its oldest slot not reported missed whose backup has not completed
    (``oldest_unreported``; one whose backup completed and was deleted since is never reported),
    and its completed backups' count and oldest (``completed``, ``oldest_completed``)."""
    of_policy = SLOTS.c.database_id == POLICIES.c.database_id
    completed = sa.and_(BACKUPS.c.database_id == POLICIES.c.database_id, BACKUPS.c.status == BackupStatus.COMPLETED)
    return (
        sa.select(
            POLICIES,
            DATABASES.c.status,
            project_plan(),
            sa.select(sa.func.max(SLOTS.c.slot)).where(of_policy).scalar_subquery().label("last_slot"),
            sa.select(sa.func.min(SLOTS.c.slot))
            .select_from(SLOTS.outerjoin(BACKUPS, _slot_backup()))
            .where(of_policy, SLOTS.c.missed_at.is_(None), _not_backed_up())
            .scalar_subquery()
            .label("oldest_unreported"),
            sa.select(sa.func.count()).where(completed).scalar_subquery().label("completed"),
            sa.select(sa.func.min(BACKUPS.c.created_at)).where(completed).scalar_subquery().label("oldest_completed"),
        )
        .join(DATABASES, DATABASES.c.id == POLICIES.c.database_id)
        .join(PROJECTS, PROJECTS.c.id == POLICIES.c.project_id)
        .where(DATABASES.c.status.not_in([*GONE, DatabaseStatus.CREATING]))
    )
