"""The object store on a local directory: the object ``key`` is the file ``root/key``.

``put`` streams into a sibling temporary file ``<key>.partial-<random>``, fsyncs it, renames it over
the key with ``os.replace`` (atomic: readers see the old object or the new one, never a mix) and
fsyncs the directory so the rename survives a power loss. Directories it creates are fsynced into
their parents the same way. A process killed mid-upload leaves its temporary file behind; those are
what ``incomplete_uploads`` reports and ``abort_incomplete`` deletes, and ``keys`` never lists them.

Every blocking file operation runs in a worker thread, so the event loop never waits on the disk.
Deleting an object leaves its (possibly empty) directories in place: they are not objects and no
listing reports them. Unlike S3, a key cannot also be a directory of other keys (``a`` and ``a/b``);
backup keys never collide that way.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from infra.object_store import CHUNK_SIZE, PARTIAL_MARKER, ObjectNotFound, check_key, check_prefix


class FilesystemStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self.root / check_key(key)
        temp = path.with_name(f"{path.name}{PARTIAL_MARKER}{secrets.token_hex(8)}")
        file = await asyncio.to_thread(_create, self.root, temp)
        try:
            size = 0
            async for chunk in chunks:
                await asyncio.to_thread(file.write, chunk)
                size += len(chunk)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_discard, file, temp))
            raise
        await asyncio.shield(asyncio.to_thread(_commit, file, temp, path))
        return size

    def get(self, key: str) -> AsyncIterator[bytes]:
        return self._read(self.root / check_key(key), key)

    async def _read(self, path: Path, key: str) -> AsyncIterator[bytes]:
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def size(self, key: str) -> int | None:
        return await asyncio.to_thread(_file_size, self.root / check_key(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(_remove, self.root / check_key(key))

    async def keys(self, prefix: str) -> list[str]:
        files = await asyncio.to_thread(_files_under, self.root, check_prefix(prefix))
        return sorted(name for name in files if PARTIAL_MARKER not in name)

    async def incomplete_uploads(self, prefix: str) -> list[str]:
        return sorted(_key_of(name) for name in await self._partials(prefix))

    async def abort_incomplete(self, prefix: str) -> int:
        partials = await self._partials(prefix)
        for name in partials:
            await asyncio.to_thread((self.root / name).unlink, missing_ok=True)
        return len(partials)

    async def close(self) -> None:
        """Nothing to release: every file is closed by the operation that opened it."""

    async def _partials(self, prefix: str) -> list[str]:
        """The temporary files (relative names) of uploads whose key starts with prefix."""
        files = await asyncio.to_thread(_files_under, self.root, check_prefix(prefix))
        return [name for name in files if PARTIAL_MARKER in name and _key_of(name).startswith(prefix)]


def _key_of(partial: str) -> str:
    return partial.partition(PARTIAL_MARKER)[0]


def _create(root: Path, temp: Path) -> BinaryIO:
    _make_dirs(root, temp.parent)
    return temp.open("xb")


def _make_dirs(root: Path, directory: Path) -> None:
    """Create directory and its missing parents below root, each fsynced into its parent."""
    if directory.is_dir():
        return
    if directory == root:
        directory.mkdir(parents=True, exist_ok=True)
    else:
        _make_dirs(root, directory.parent)
        directory.mkdir(exist_ok=True)
    _fsync_dir(directory.parent)


def _commit(file: BinaryIO, temp: Path, path: Path) -> None:
    """Make the complete temporary file the object; it runs to the end even if the caller is cancelled."""
    try:
        with file:
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        _discard(file, temp)
        raise
    _fsync_dir(path.parent)


def _discard(file: BinaryIO, temp: Path) -> None:
    file.close()
    temp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Delete the object's file; a missing key (nothing there, or a directory of other keys) is fine."""
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size(path: Path) -> int | None:
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _files_under(root: Path, prefix: str) -> list[str]:
    """Relative names (with ``/``) of the regular files below root whose name starts with prefix."""
    start = root / prefix.rpartition("/")[0]
    found: list[str] = []
    for directory, _, files in os.walk(start):
        base = Path(directory).relative_to(root)
        for file in files:
            name = (base / file).as_posix()
            if name.startswith(prefix):
                found.append(name)
    return found
