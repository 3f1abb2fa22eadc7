"""The object store that holds database backups: an interface, its key rules and a factory.

Two implementations honour the same contract (one test suite proves both): a directory on a local
filesystem and an S3 bucket. Objects are written by streaming chunks and become visible only once
complete, so a reader never sees half a backup; a failed or cancelled upload removes what it wrote,
and one left behind by a process killed mid-upload is found by ``incomplete_uploads`` and removed by
``abort_incomplete``.

Keys are relative paths such as ``backups/<project>/<database>/<backup>.pgdump.enc``: segments of
``[A-Za-z0-9._-]`` joined by single slashes. ``..`` anywhere, ``.`` or empty segments, a leading or
trailing slash and any other character are refused (ValueError) because on the filesystem they
would alias another key or escape the store's root; ``.partial-`` is reserved for the filesystem's
temporary files. Prefixes (of ``keys`` and the incomplete-upload methods) are plain string prefixes,
as in S3: ``backups/p1/`` lists one project, ``backups/p1`` also matches ``backups/p10/``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

CHUNK_SIZE = 1024 * 1024
PARTIAL_MARKER = ".partial-"

_ALLOWED = re.compile(r"[A-Za-z0-9._/-]*")


class ObjectNotFound(Exception):
    """The key names no complete object."""


class ObjectStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Stream chunks into the object `key`; returns its size in bytes. Atomic: the object is visible
        (to get/size/keys) only once complete; an existing object with that key is replaced. On ANY exception
        or cancellation while consuming `chunks`, the partial upload is removed (filesystem: the temp file is
        deleted; S3: the multipart upload is aborted) and the exception propagates. Memory stays flat: at most one
        part buffered."""

    def get(self, key: str) -> AsyncIterator[bytes]:
        """Stream the object's bytes in chunks (about 1 MiB); raises ObjectNotFound (on first iteration) if missing."""

    async def size(self, key: str) -> int | None:
        """The object's size in bytes; None when it is missing."""

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is fine."""

    async def keys(self, prefix: str) -> list[str]:
        """The keys of complete objects under prefix, sorted."""

    async def incomplete_uploads(self, prefix: str) -> list[str]:
        """Keys under prefix with an upload that started and never completed (left by a process killed mid-upload).

        Sorted, one entry per such upload. Uploads still in progress are reported too: the store cannot tell them
        from abandoned ones."""

    async def abort_incomplete(self, prefix: str) -> int:
        """Remove those partial uploads (S3: AbortMultipartUpload each); returns how many.

        Run it only when no upload under prefix is in progress (at start-up, or under a lock)."""

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""


@dataclass(frozen=True, kw_only=True)
class S3Options:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    part_size: int = 8 * 1024 * 1024  # S3 minimum is 5 MiB for all but the last part


def check_key(key: str) -> str:
    """The key itself when it follows the key rules; ValueError otherwise."""
    return _check(key, complete=True)


def check_prefix(prefix: str) -> str:
    """The prefix itself when it could start a valid key ("" matches every key); ValueError otherwise."""
    return _check(prefix, complete=False)


def _check(text: str, *, complete: bool) -> str:
    segments = text.split("/")
    whole = segments if complete else segments[:-1]  # a prefix may end mid-segment
    if (
        not _ALLOWED.fullmatch(text)
        or ".." in text
        or PARTIAL_MARKER in text
        or any(segment in ("", ".") for segment in whole)
    ):
        raise ValueError(f"invalid object {'key' if complete else 'prefix'} {text!r}")
    return text


def open_store(url: str, *, s3: S3Options | None = None) -> ObjectStore:
    """`file:///abs/dir` → FilesystemStore; `s3://bucket/optional/prefix` → S3Store. Anything else: ValueError."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"object store URL takes no query or fragment: {url!r}")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        from infra.object_store.filesystem import FilesystemStore

        return FilesystemStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        from infra.object_store.s3 import S3Store

        return S3Store(parts.netloc, parts.path.strip("/"), s3 or S3Options())
    raise ValueError(f"unsupported object store URL {url!r}: use file:///abs/dir or s3://bucket/prefix")
