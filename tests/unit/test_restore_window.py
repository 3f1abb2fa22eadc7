"""The restore window from base backups and archived WAL: spans, gaps, and which base a moment uses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api.restore_window import Base, choose, missing_after, reaching_now, spans
from infra.wal import next_segment

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def segment(n: int) -> str:
    return f"00000001{n >> 8:08X}{n & 0xFF:08X}"


def archived(numbers: range | list[int]) -> dict[str, datetime]:
    return {segment(n): T0 + timedelta(minutes=n) for n in numbers}


def base(start: int, stop: int, finished_minute: float) -> Base:
    return Base(
        id=uuid.uuid4(),
        start_segment=segment(start),
        stop_segment=segment(stop),
        finished_at=T0 + timedelta(minutes=finished_minute),
    )


def test_segment_names_roll_over_into_the_next_log() -> None:
    assert next_segment("0000000100000000000000FF") == "000000010000000100000000"
    assert next_segment(segment(0x1FE)) == segment(0x1FF)


def test_a_base_backup_covers_up_to_its_last_unbroken_segment() -> None:
    first, second = base(2, 3, 3.5), base(10, 11, 11.5)
    found = spans([first, second], archived([*range(2, 8), *range(9, 20)]))  # segment 8 is missing
    assert [(s.base_backup_id, s.start, s.end) for s in found] == [
        (first.id, first.finished_at, T0 + timedelta(minutes=7)),
        (second.id, second.finished_at, T0 + timedelta(minutes=19)),
    ]
    assert choose(found, T0 + timedelta(minutes=5)) == found[0]
    assert choose(found, T0 + timedelta(minutes=12)) == found[1]
    assert choose(found, T0 + timedelta(minutes=8)) is None  # in the gap
    assert missing_after([first, second], archived([*range(2, 8), *range(9, 20)]), T0 + timedelta(minutes=8)) == (
        segment(8)
    )


def test_a_base_backup_whose_own_wal_is_incomplete_covers_nothing() -> None:
    assert spans([base(2, 5, 5.5)], archived(range(2, 5))) == []


def test_while_the_host_is_up_the_span_reaching_the_newest_segment_reaches_now() -> None:
    old, gapped, newest = base(2, 3, 3.5), base(10, 11, 11.5), base(14, 15, 15.5)
    segments = archived([*range(2, 8), *range(10, 20)])  # segments 8 and 9 are missing
    now = T0 + timedelta(hours=2)
    found = reaching_now(spans([old, gapped, newest], segments), segments, now)
    assert [(s.base_backup_id, s.end) for s in found] == [
        (old.id, T0 + timedelta(minutes=7)),  # its WAL stops at the gap: a restore cannot seal past it
        (gapped.id, now),
        (newest.id, now),
    ]
    assert choose(found, now - timedelta(seconds=5)) == found[2]
    assert reaching_now([], segments, now) == []
