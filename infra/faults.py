"""Where tests break the platform on purpose.

Production code calls ``crash_point`` at every point a crash test kills the process (between a
saga step's effect and its record, mid-upload, between accepting a request and publishing it)
and ``before_step`` before each saga step. This default does nothing; the composition root hands
it to every process unless a test passes an injector (the dev stack's ``InjectedFaults``) that
kills the process or fails a step there.
"""

from __future__ import annotations


class Faults:
    """No faults: every hook is a no-op."""

    def crash_point(self, name: str) -> None:
        """A point where a crash test may kill the process (no cleanup, no ack)."""

    def before_step(self, step: str) -> None:
        """Called before saga step ``<kind>.<step>`` runs; an injector raises here to fail it."""


NO_FAULTS = Faults()
