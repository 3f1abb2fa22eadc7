"""A tar stream split by member as it flows: ``pg_basebackup``'s tar of a whole host becomes one
archive per database directory plus one for everything else, so restoring one database fetches
and unpacks only what it needs. Pure: bytes in, ``(part, bytes)`` out.

Only the plain ustar members PostgreSQL writes are accepted (its tar writer has no long-name or
pax headers); anything else, a bad header checksum or an archive that ends early raises
``TarFormatError``, so a backup can never be split wrongly without saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable

BLOCK = 512
TRAILER = bytes(2 * BLOCK)
"""The end-of-archive marker each part gets of its own."""
_EXTENSIONS = (b"L", b"K", b"x", b"g")


class TarFormatError(ValueError):
    """The stream is not a tar this splitter can cut correctly."""


def member_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def member_size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # base-256, for sizes the octal field cannot hold
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _check(header: bytes) -> None:
    try:
        stored = int(header[148:156].strip(b"\0 "), 8)
    except ValueError:
        raise TarFormatError("a tar header has no checksum") from None
    if stored != sum(header[:148]) + 8 * 0x20 + sum(header[156:]):
        raise TarFormatError(f"a tar header failed its checksum near {member_name(header)!r}")
    if header[156:157] in _EXTENSIONS:
        raise TarFormatError(f"unsupported tar extension header near {member_name(header)!r}")


async def split(stream: AsyncIterable[bytes], part_of: Callable[[str], str]) -> AsyncIterator[tuple[str, bytes]]:
    """Each member's header and (padded) data, in order, tagged with ``part_of(member name)``; the
    end-of-archive blocks are dropped (``TRAILER`` closes each part)."""
    buffer = bytearray()
    part, remaining, ended = "", 0, False
    async for chunk in stream:
        if ended:
            continue  # the padding after the end-of-archive blocks
        buffer += chunk
        offset = 0
        while True:
            if remaining:
                if offset == len(buffer):
                    break
                piece = bytes(buffer[offset : offset + remaining])
                offset += len(piece)
                remaining -= len(piece)
                yield part, piece
                continue
            if len(buffer) - offset < BLOCK:
                break
            header = bytes(buffer[offset : offset + BLOCK])
            offset += BLOCK
            if header == bytes(BLOCK):
                ended = True
                break
            _check(header)
            part = part_of(member_name(header))
            remaining = -(-member_size(header) // BLOCK) * BLOCK
            yield part, header
        del buffer[:offset]
    if not ended:
        raise TarFormatError("the archive ended early")
