"""Which moments a database can be restored to, from its host's base backups and archived WAL.

A base backup covers the time from when it finished up to the archive time of the last segment
of the unbroken run of WAL that starts where it started. A database's window is the union of
its host's covered spans, cut to the plan's retention and to the database's own lifetime.

While the host is up, the span whose WAL reaches the newest archived segment reaches the present
too: a restore first seals the WAL (commit, switch, wait until archived), so everything written
up to the request is archived before recovery needs it. The recovery point is then seconds; with
the host down it is the archive lag.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from infra.wal import next_segment


@dataclass(frozen=True, kw_only=True)
class Span:
    base_backup_id: uuid.UUID
    start: datetime
    end: datetime
    last_segment: str


@dataclass(frozen=True, kw_only=True)
class Base:
    id: uuid.UUID
    start_segment: str
    stop_segment: str
    finished_at: datetime


def spans(bases: list[Base], segments: dict[str, datetime]) -> list[Span]:
    """One span per base backup whose WAL reaches at least its own end, oldest first."""
    found = []
    for base in sorted(bases, key=lambda b: b.finished_at):
        segment, last = base.start_segment, None
        while segment in segments:
            last, segment = segment, next_segment(segment)
        if last is not None and last >= base.stop_segment and segments[last] >= base.finished_at:
            found.append(Span(base_backup_id=base.id, start=base.finished_at, end=segments[last], last_segment=last))
    return found


def reaching_now(found: list[Span], segments: dict[str, datetime], now: datetime) -> list[Span]:
    """The spans of a host that is up: the ones unbroken up to the newest archived segment reach ``now``."""
    newest = max(segments, default=None)
    return [replace(s, end=max(s.end, now)) if s.last_segment == newest else s for s in found]


def missing_after(bases: list[Base], segments: dict[str, datetime], moment: datetime) -> str | None:
    """The first segment missing after the newest base backup finished before ``moment``."""
    before = [b for b in bases if b.finished_at <= moment]
    if not before:
        return None
    segment = max(before, key=lambda b: b.finished_at).start_segment
    while segment in segments:
        segment = next_segment(segment)
    return segment


def choose(found: list[Span], moment: datetime) -> Span | None:
    """The span that restores ``moment`` fastest: the newest base backup covering it."""
    covering = [s for s in found if s.start <= moment <= s.end]
    return max(covering, key=lambda s: s.start) if covering else None
