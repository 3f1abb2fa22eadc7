"""WAL segment names and where archived WAL and base backups live in the object store. Pure."""

from __future__ import annotations

import re
import uuid

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
SEGMENTS_PER_LOG = 0x100  # 16 MiB segments: 256 to each 4 GiB "log" number


def next_segment(segment: str) -> str:
    """The name of the segment after ``segment`` on the same timeline."""
    timeline, log, seg = int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16) + 1
    if seg == SEGMENTS_PER_LOG:
        log, seg = log + 1, 0
    return f"{timeline:08X}{log:08X}{seg:08X}"


def wal_object_key(host_id: str, segment: str) -> str:
    return f"wal/{host_id}/{segment}.zz.enc"


def wal_context(host_id: str, segment: str) -> str:
    """What an archived segment's chunks are bound to: it cannot pass for another segment or host."""
    return f"pgplane-wal:{host_id}:{segment}"


def base_object_key(host_id: str, base_backup_id: uuid.UUID) -> str:
    return f"base/{host_id}/{base_backup_id}.tar.gz.enc"


def base_context(host_id: str, base_backup_id: uuid.UUID) -> str:
    return f"pgplane-base:{host_id}:{base_backup_id}"


def base_part_key(host_id: str, base_backup_id: uuid.UUID, oid: str) -> str:
    """One database's directory of a base backup, stored apart from the rest."""
    return f"base/{host_id}/{base_backup_id}/{oid}.tar.gz.enc"


def base_part_context(host_id: str, base_backup_id: uuid.UUID, oid: str) -> str:
    """A part cannot pass for another database's part, nor for the rest of the backup."""
    return f"{base_context(host_id, base_backup_id)}:{oid}"
