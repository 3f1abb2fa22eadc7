"""The errors a saga step raises, which decide what happens next: retry, compensate, or fail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class PermanentError(Exception):
    """A failure that retrying cannot fix: the saga compensates.

    The message is what the tenant reads, in product terms; ``detail`` is what an operator needs
    (server addresses, physical names, a tool's own words): logged and shown to admins only.
    """

    def __init__(self, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.detail = None if detail is None else str(detail)


class DeadlineExceeded(PermanentError):
    """A step ran past its deadline: undone like any permanent failure, the operation ends ``failed``."""


class TransientError(Exception):
    """A failure worth retrying: the message is redelivered later."""


class Unreachable(Exception):
    """A server a process needs does not answer (the message names which one, never a password)."""


async def within_deadline(seconds: float, what: str, work: Awaitable[T]) -> T:
    """``work``, or ``DeadlineExceeded`` once it has run ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise DeadlineExceeded(f"{what} did not finish within its deadline of {seconds:g} s") from None
