"""The vocabulary of the saga table: a step (an idempotent action and its undo), the typed output
a step may record, and a saga (its steps in order and the event that says it succeeded)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from schemas.events import OperationEvent


class StepOutput(BaseModel):
    """What a step produced that the success event needs; recorded with the step (never a secret)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Output = TypeVar("Output", bound=StepOutput)
Undo = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """``do`` checks reality first, so running it twice does nothing twice; so does ``undo``."""

    name: str
    do: Callable[[], Awaitable[StepOutput | None]]
    undo: Undo | None = None


class Results:
    """The outputs recorded by a saga's completed steps, read back as the types they were written as."""

    def __init__(self, outputs: dict[str, dict[str, Any]]) -> None:
        self._outputs = outputs

    def get(self, step: str, model: type[Output]) -> Output:
        return model.model_validate(self._outputs[step])


@dataclass(frozen=True)
class Saga:
    steps: list[Step]
    succeeded: Callable[[Results], OperationEvent]
    """The event published once every step is done."""
