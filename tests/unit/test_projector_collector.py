"""The projector loop runs with the cycle collector's young threshold raised to hold its batches
(why: ``infra.collector``), and gives the process its setting back when it stops."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from consumers.projector.service import YOUNG_OBJECTS, Projector, StreamReader
from infra.batch_pull import BatchPull


class _EmptyPull:
    """A consumer with nothing to deliver that notes the threshold at each fetch, and stops the loop."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.thresholds: list[int] = []

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.thresholds.append(gc.get_threshold()[0])
        self.stop.set()
        return []


async def test_the_loop_holds_batches_and_restores_the_setting() -> None:
    before = gc.get_threshold()
    stop = asyncio.Event()
    pull = _EmptyPull(stop)
    projector = Projector(cast(Any, None), cast(BatchPull, pull), cast(StreamReader, None))
    await projector.run(stop)
    assert pull.thresholds and all(threshold >= YOUNG_OBJECTS for threshold in pull.thresholds)
    assert gc.get_threshold() == before
