"""The temporary cluster's ``restore_command``: it waits for the segment recovery asks for, and
stops waiting when no more will come or when the cluster's WAL directory is gone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from consumers.agent.temp_cluster import END, WANTED, _restore_command

SEGMENT = "000000010000000000000003"


def restore(wal: Path, into: Path, segment: str = SEGMENT) -> int:
    command = _restore_command(wal).replace("%f", segment).replace("%p", str(into))
    return subprocess.run(command, shell=True, timeout=10, check=False).returncode


def test_a_segment_there_is_copied_and_noted_as_wanted(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / SEGMENT).write_bytes(b"wal")
    assert restore(wal, tmp_path / "copy") == 0
    assert (tmp_path / "copy").read_bytes() == b"wal"
    assert (wal / WANTED).read_text().strip() == SEGMENT


def test_no_segment_after_the_end_and_no_history_files(tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / END).touch()
    assert restore(wal, tmp_path / "copy") == 1
    assert restore(wal, tmp_path / "copy", "00000002.history") == 1
    assert not (tmp_path / "copy").exists()


def test_a_removed_directory_ends_the_wait(tmp_path: Path) -> None:
    """A recovery left running after its cluster was removed does not wait for ever."""
    assert restore(tmp_path / "gone", tmp_path / "copy") == 1
