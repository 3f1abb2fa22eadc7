"""The message contract: envelope, commands, events and subjects. Pure pydantic, no I/O."""

from schemas import commands, events
from schemas.envelope import Envelope, Payload

__all__ = ["Envelope", "Payload", "commands", "events"]
