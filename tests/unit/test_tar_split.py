"""Splitting a tar by member as it streams: every part is a valid tar of exactly its members, and
anything the splitter cannot cut correctly is refused."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator, Mapping

import pytest

from infra.tar_split import TRAILER, TarFormatError, split

FILES = {
    "PG_VERSION": b"15\n",
    "global/1262": b"g" * 700,
    "base/1/1259": b"t" * 10,
    "base/16384/2600": b"a" * 1500,
    "base/16384/2601": b"",
    "base/16390/2600": b"b" * 513,
    "pg_wal/archive_status": None,  # a directory
}


def archive(files: Mapping[str, bytes | None], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, body in files.items():
            member = tarfile.TarInfo(name)
            if body is None:
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            else:
                member.size = len(body)
                tar.addfile(member, io.BytesIO(body))
    return out.getvalue()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def database(name: str) -> str:
    parts = name.split("/")
    return parts[1] if parts[0] == "base" and len(parts) > 1 and parts[1] != "1" else "rest"


async def parts_of(data: bytes, size: int) -> dict[str, bytes]:
    found: dict[str, bytearray] = {}
    async for part, piece in split(pieces(data, size), database):
        found.setdefault(part, bytearray()).extend(piece)
    return {part: bytes(body) + TRAILER for part, body in found.items()}


def contents(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: None if m.isdir() else (tar.extractfile(m) or io.BytesIO()).read() for m in tar.getmembers()}


@pytest.mark.parametrize("size", [1, 7, 512, 4096, 1 << 20])
async def test_each_part_is_a_tar_of_its_members(size: int) -> None:
    parts = await parts_of(archive(FILES), size)
    assert sorted(parts) == ["16384", "16390", "rest"]
    assert contents(parts["16384"]) == {"base/16384/2600": b"a" * 1500, "base/16384/2601": b""}
    assert contents(parts["16390"]) == {"base/16390/2600": b"b" * 513}
    assert contents(parts["rest"]) == {
        name: body for name, body in FILES.items() if not name.startswith(("base/16384", "base/16390"))
    }


async def test_a_damaged_header_is_refused() -> None:
    data = bytearray(archive(FILES))
    data[3] ^= 0xFF  # the first member's name: its checksum no longer matches
    with pytest.raises(TarFormatError, match="checksum"):
        await parts_of(bytes(data), 4096)


async def test_an_archive_cut_short_is_refused() -> None:
    data = archive(FILES)
    with pytest.raises(TarFormatError, match="ended early"):
        await parts_of(data[: len(data) // 2], 4096)


async def test_headers_it_cannot_route_are_refused() -> None:
    long_name = {"base/16384/" + "x" * 120: b"1"}  # a GNU long-name header names the next member
    with pytest.raises(TarFormatError, match="extension"):
        await parts_of(archive(long_name, tarfile.GNU_FORMAT), 4096)
