"""Faults injected by tests into a platform process, and the launcher that runs a process with them.

``python -m devstack.faults agent`` runs ``pgplane agent`` with the faults named in its
environment: ``DEVSTACK_CRASH_AT=create.database_created.done`` makes the process die
(``os._exit``: no cleanup, no ack, exactly like a SIGKILL) when it reaches that point;
``DEVSTACK_FAIL_AT=create.login_verified`` makes that step fail permanently, and
``DEVSTACK_FAIL_AT=create.route_added:transient`` on every attempt with a retryable error.
The production entry point never reads these variables.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from infra.errors import PermanentError, TransientError
from infra.faults import Faults

CRASH_EXIT_CODE = 86


@dataclass(frozen=True, kw_only=True)
class InjectedFaults(Faults):
    crash_at: str | None = None
    fail_at: str | None = None

    def crash_point(self, name: str) -> None:
        if self.crash_at == name:
            print(f"crash point {name} reached: exiting", file=sys.stderr, flush=True)
            os._exit(CRASH_EXIT_CODE)

    def before_step(self, step: str) -> None:
        if self.fail_at == step:
            raise PermanentError(f"injected permanent failure at {step}")
        if self.fail_at == f"{step}:transient":
            raise TransientError(f"injected transient failure at {step}")

    def env(self) -> dict[str, str]:
        """The environment that makes ``python -m devstack.faults`` inject these faults."""
        found = {"DEVSTACK_CRASH_AT": self.crash_at, "DEVSTACK_FAIL_AT": self.fail_at}
        return {name: value for name, value in found.items() if value}


def main() -> None:
    from entrypoints.cli import main as pgplane

    faults = InjectedFaults(crash_at=os.environ.get("DEVSTACK_CRASH_AT"), fail_at=os.environ.get("DEVSTACK_FAIL_AT"))
    pgplane(sys.argv[1:], faults=faults)


if __name__ == "__main__":
    main()
