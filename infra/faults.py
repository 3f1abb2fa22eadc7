"""Crash points and injected failures, enabled only by tests through settings.

``PGPLANE_CRASH_AT=create.database_created.done`` makes the process die (``os._exit``: no
cleanup, no ack, exactly like a SIGKILL) when it reaches that point.
``PGPLANE_FAIL_AT=create.login_verified`` makes that step fail permanently, and
``PGPLANE_FAIL_AT=create.route_added:transient`` makes it fail on every attempt with a
retryable error. In production both settings are unset and these calls do nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class PermanentError(Exception):
    """A failure that retrying cannot fix: the saga compensates."""


class DeadlineExceeded(PermanentError):
    """A step ran past its deadline: undone like any permanent failure, the operation ends ``failed``."""


class TransientError(Exception):
    """A failure worth retrying: the message is redelivered later."""


CRASH_EXIT_CODE = 86


def crash_point(crash_at: str | None, name: str) -> None:
    if crash_at == name:
        print(f"crash point {name} reached: exiting", file=sys.stderr, flush=True)
        os._exit(CRASH_EXIT_CODE)


def injected_failure(fail_at: str | None, step: str) -> None:
    if fail_at == step:
        raise PermanentError(f"injected permanent failure at {step}")
    if fail_at == f"{step}:transient":
        raise TransientError(f"injected transient failure at {step}")


async def within_deadline(seconds: float, what: str, work: Awaitable[T]) -> T:
    """``work``, or ``DeadlineExceeded`` once it has run ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise DeadlineExceeded(f"{what} did not finish within its deadline of {seconds:g} s") from None
