"""Helper servers a test module starts as subprocesses (a local Stripe, an OpenID Connect
provider): on a free loopback port, logged with the cluster's logs, stopped with the module."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from devstack.cluster import Cluster
from infra.processes import free_port, spawn, stop, wait_for_port


@contextlib.contextmanager
def local_server(cluster: Cluster, what: str, module: str, *args: str) -> Iterator[str]:
    """``python -m module <port> args…`` (``{port}`` in ``args`` is replaced); yields its URL."""
    port = free_port()
    log = cluster.root / "logs" / f"{module.rsplit('.', 1)[-1]}-{port}.log"
    argv = [a.replace("{port}", str(port)) for a in args]
    proc = spawn([sys.executable, "-m", module, *argv], log)
    try:
        wait_for_port(port, proc, log, what)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
