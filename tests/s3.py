"""The session's local S3 endpoint (moto's server, started like the other servers). A server that
cannot start fails the session loudly; tests create their own buckets on it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.s3_server import S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    root = Path(tempfile.mkdtemp(prefix="pgplane-s3-"))
    server = S3Server(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
