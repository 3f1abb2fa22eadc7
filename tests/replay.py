"""Wait for the projector to catch up, then replay the stream and compare. It runs what
``pgplane replay projection`` runs, in this process (the command itself is tested in
``tests/e2e/test_dev_stack.py``): starting an interpreter for it costs more than the replay."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from devstack.stack import Stack
from entrypoints import operator


def replay_matches(stack: Stack, *, settle: float = 30) -> None:
    """Every read-model table matches a replay of the stream (retried while the live projector may
    still be applying the last events)."""
    settings = stack.settings("operator")
    deadline = time.monotonic() + settle
    with ThreadPoolExecutor(1) as thread:  # callers may be inside a running event loop
        while True:
            report = thread.submit(asyncio.run, operator.replay(settings)).result()
            if report.matches:
                return
            assert time.monotonic() < deadline, f"replayed projection differs:\n{report}"
            time.sleep(0.5)
