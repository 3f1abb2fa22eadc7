"""A local S3-compatible endpoint for tests and benchmarks: moto's server on a free port.

It keeps everything in memory and accepts any credentials, so ``options()`` hands out dummy ones.
Like the supervisor's servers it runs as a child process in its own session, logging to
``<root>/logs/s3.log``, and a server that cannot start raises with the tail of that log.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3  # type: ignore[import-untyped]

from infra.object_store import S3Options
from infra.processes import STARTUP_TIMEOUT, free_port, spawn, wait_for_port
from infra.processes import stop as stop_process

CREDENTIAL = "testing"


@dataclass
class S3Server:
    root: Path
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / "s3.log"
        self.port = free_port()
        binary = Path(sys.executable).parent / "moto_server"
        self._proc = spawn([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], log)
        wait_for_port(self.port, self._proc, log, "the S3 server")
        self._wait_for_http()

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def options(self) -> S3Options:
        return S3Options(endpoint_url=self.endpoint_url, access_key_id=CREDENTIAL, secret_access_key=CREDENTIAL)

    def create_bucket(self, name: str) -> None:
        client = boto3.client(
            "s3",
            region_name=S3Options().region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIAL,
            aws_secret_access_key=CREDENTIAL,
        )
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def _wait_for_http(self) -> None:
        """Listening is not serving: wait until a request gets any HTTP answer."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(self.endpoint_url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
