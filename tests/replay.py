"""Wait for the projector to catch up, then replay the stream and compare."""

from __future__ import annotations

import subprocess
import sys
import time

from devstack.stack import Stack


def replay_matches(stack: Stack, *, settle: float = 30) -> None:
    """``pgplane replay projection`` exits 0 only when every read-model table matches."""
    deadline = time.monotonic() + settle
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", "replay", "projection"],
            env=stack.env("operator"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"replayed projection differs:\n{result.stdout}\n{result.stderr}"
        time.sleep(0.5)  # the live projector may still be applying the last events
