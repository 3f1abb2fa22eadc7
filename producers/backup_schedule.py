"""Backup schedules: ``daily`` or a cron expression, always in UTC. Pure functions, no I/O."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from croniter import croniter

DAILY = "0 0 * * *"
LOOKBACK_SLOTS = 100
"""Slots further back than this are not reported one by one after a long outage."""


def cron_expression(schedule: str) -> str:
    return DAILY if schedule == "daily" else schedule


def check_schedule(schedule: str, *, min_interval_seconds: int) -> None:
    """``ValueError`` for an invalid expression or one that fires more often than allowed."""
    expression = cron_expression(schedule)
    if not croniter.is_valid(expression):
        raise ValueError(f"{schedule!r} is neither 'daily' nor a valid cron expression")
    it = croniter(expression, datetime(2026, 1, 1))
    fires = [it.get_next(datetime) for _ in range(50)]
    shortest = min(later - earlier for earlier, later in itertools.pairwise(fires))
    if shortest < timedelta(seconds=min_interval_seconds):
        raise ValueError(f"{schedule!r} fires more often than every {min_interval_seconds} s")


def slots_between(schedule: str, start: datetime, end: datetime) -> list[datetime]:
    """The slots in ``(start, end]``, oldest first, at most the newest ``LOOKBACK_SLOTS``."""
    it = croniter(cron_expression(schedule), end + timedelta(microseconds=1))
    found: list[datetime] = []
    while len(found) < LOOKBACK_SLOTS:
        slot: datetime = it.get_prev(datetime)
        if slot <= start:
            break
        found.append(slot)
    return found[::-1]
