"""Each operation's scratch space on the data host (downloads, a temporary cluster), under the
agent's work directory, and its removal once the operation has ended, however it ended."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from contextlib import suppress
from pathlib import Path

from consumers.agent.ledger import Ledger
from consumers.agent.temp_cluster import TempCluster
from schemas.events import SUCCEEDED, OperationCompensated, OperationFailed

TERMINAL = {OperationFailed.TYPE, OperationCompensated.TYPE} | {event.TYPE for event in SUCCEEDED.values()}
"""The event types that end an operation."""


def operation_work_dir(work_dir: Path, operation_id: uuid.UUID) -> Path:
    return work_dir / operation_id.hex


async def remove_operation_work(work_dir: Path, operation_id: uuid.UUID, admin_dsn: str) -> None:
    """Stop the operation's temporary cluster if one runs, then remove its directory (idempotent)."""
    directory = operation_work_dir(work_dir, operation_id)
    if await asyncio.to_thread(directory.exists):
        await TempCluster(directory / "cluster", admin_dsn).remove()
        await asyncio.to_thread(shutil.rmtree, directory, True)


async def sweep_work_dir(work_dir: Path, ledger: Ledger, admin_dsn: str) -> None:
    """At start: remove what operations that ended while the agent was down left behind."""
    for entry in await asyncio.to_thread(lambda: list(work_dir.glob("*"))):
        with suppress(ValueError):
            operation_id = uuid.UUID(entry.name)
            history = await ledger.history(operation_id)
            if history and history[-1].type in TERMINAL:
                await remove_operation_work(work_dir, operation_id, admin_dsn)
