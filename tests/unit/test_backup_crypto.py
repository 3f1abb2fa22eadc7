"""The encrypted backup stream format: round trips, and every kind of damage it must detect."""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator, Sequence

import pytest

from infra.backup_crypto import (
    CHUNK_SIZE,
    MAGIC,
    SALT_SIZE,
    TAG_SIZE,
    VERSION,
    BackupIntegrityError,
    BackupKeys,
    Encryptor,
    decrypt_stream,
    encrypt_stream,
    new_backup_key_spec,
)

KEYS = BackupKeys.parse(new_backup_key_spec("k1"))
CONTEXT = "project-1:db-1:backup-1"
MARKER = b"PLAINTEXT-MARKER-0123456789;"
FRAME_HEAD = 5
MANY = 3 * CHUNK_SIZE + 12345  # three full chunks and a remainder
ODD_SIZES = (1, 7, 4099, 5 * CHUNK_SIZE, 13, CHUNK_SIZE + 3)


def plaintext(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


async def pieces(data: bytes, sizes: Sequence[int] | None = None) -> AsyncIterator[bytes]:
    position = 0
    for size in itertools.cycle(sizes or [max(len(data), 1)]):
        if position >= len(data):
            return
        yield data[position : position + size]
        position += size


async def encrypt(data: bytes, *, keys: BackupKeys = KEYS, context: str = CONTEXT) -> bytes:
    return b"".join([out async for out in encrypt_stream(pieces(data), keys=keys, context=context)])


async def decrypt(
    blob: bytes, *, keys: BackupKeys = KEYS, context: str = CONTEXT, sizes: Sequence[int] | None = None
) -> list[bytes]:
    return [out async for out in decrypt_stream(pieces(blob, sizes), keys=keys, context=context)]


async def decrypted_before_failure(blob: bytes) -> bytes:
    """What decryption yielded before it raised (it must raise)."""
    yielded = bytearray()
    with pytest.raises(BackupIntegrityError):
        async for out in decrypt_stream(pieces(blob), keys=KEYS, context=CONTEXT):
            yielded += out
    return bytes(yielded)


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    """The header and the frames of a stream, parsed per the documented format."""
    header_size = len(MAGIC) + 2 + blob[len(MAGIC) + 1] + SALT_SIZE
    header, rest, frames = blob[:header_size], blob[header_size:], []
    while rest:
        size = FRAME_HEAD + int.from_bytes(rest[1:FRAME_HEAD], "big")
        frames.append(rest[:size])
        rest = rest[size:]
    return header, frames


def flip(blob: bytes, position: int, bit: int = 0) -> bytes:
    damaged = bytearray(blob)
    damaged[position] ^= 1 << bit
    return bytes(damaged)


@pytest.mark.parametrize(
    ("size", "frame_count"),
    [(0, 1), (1, 1), (CHUNK_SIZE - 1, 1), (CHUNK_SIZE, 2), (CHUNK_SIZE + 1, 2), (MANY, 4)],
)
async def test_round_trip(size: int, frame_count: int) -> None:
    data = plaintext(size)
    blob = await encrypt(data)
    _, frames = split(blob)
    assert len(frames) == frame_count
    assert [frame[0] for frame in frames] == [0] * (frame_count - 1) + [1]
    out = await decrypt(blob)
    assert b"".join(out) == data
    # One verified piece per chunk, never the whole backup at once.
    assert [len(piece) for piece in out] == [len(frame) - FRAME_HEAD - TAG_SIZE for frame in frames]
    assert all(len(piece) <= CHUNK_SIZE for piece in out)


async def test_round_trip_with_odd_input_splits() -> None:
    data = plaintext(MANY)
    encrypted = [out async for out in encrypt_stream(pieces(data, ODD_SIZES), keys=KEYS, context=CONTEXT)]
    blob = b"".join(encrypted)
    assert b"".join(await decrypt(blob, sizes=ODD_SIZES)) == data
    assert b"".join(await decrypt(blob, sizes=[CHUNK_SIZE + FRAME_HEAD + TAG_SIZE])) == data


async def test_round_trip_one_byte_at_a_time() -> None:
    for size in (0, 1000):
        data = plaintext(size)
        assert b"".join(await decrypt(await encrypt(data), sizes=[1])) == data


async def test_ciphertext_hides_plaintext_and_differs_per_backup() -> None:
    data = plaintext(MANY)
    first, second = await encrypt(data), await encrypt(data)
    assert MARKER not in first
    assert MARKER[:8] not in first
    assert split(first)[0] != split(second)[0]  # fresh salt, so a fresh data key
    assert split(first)[1][0][FRAME_HEAD:] != split(second)[1][0][FRAME_HEAD:]


async def test_header_names_format_and_key() -> None:
    header, _ = split(await encrypt(b""))
    assert header[: len(MAGIC) + 2] == MAGIC + bytes([VERSION, 2])
    assert header[len(MAGIC) + 2 : -SALT_SIZE] == b"k1"


async def test_wrong_context_fails() -> None:
    blob = await encrypt(plaintext(1000))
    with pytest.raises(BackupIntegrityError):
        await decrypt(blob, context="project-1:db-1:backup-2")


async def test_wrong_key_under_the_same_id_fails() -> None:
    blob = await encrypt(plaintext(1000))
    with pytest.raises(BackupIntegrityError):
        await decrypt(blob, keys=BackupKeys.parse(new_backup_key_spec("k1")))


@pytest.mark.parametrize("size", [0, 1000, MANY])
async def test_truncation_fails(size: int) -> None:
    blob = await encrypt(plaintext(size))
    header, frames = split(blob)
    cuts = {
        b"",
        blob[:3],
        header[:-1],
        header,
        header + frames[0][:FRAME_HEAD],
        header + frames[0][: FRAME_HEAD + 1],
        blob[:-1],
        blob[:-TAG_SIZE],
        blob[: -len(frames[-1])],  # dropped the final chunk: ends at a chunk boundary
    }
    for cut in cuts:
        with pytest.raises(BackupIntegrityError):
            await decrypt(cut)


async def test_a_chunk_cannot_be_relabelled_final() -> None:
    # Cutting at a chunk boundary and setting that chunk's final flag must not pass for a complete backup.
    header, frames = split(await encrypt(plaintext(MANY)))
    forged = header + bytes([1]) + frames[0][1:]
    with pytest.raises(BackupIntegrityError):
        await decrypt(forged)
    assert await decrypted_before_failure(forged) == b""


async def test_every_single_bit_flip_fails() -> None:
    blob = await encrypt(plaintext(100))
    for position, bit in itertools.product(range(len(blob)), range(8)):
        with pytest.raises(BackupIntegrityError):
            await decrypt(flip(blob, position, bit))


async def test_bit_flips_in_a_large_backup_fail_and_never_yield_the_damaged_chunk() -> None:
    data = plaintext(MANY)
    blob = await encrypt(data)
    header, frames = split(blob)
    first_body = len(header) + FRAME_HEAD
    second_frame = len(header) + len(frames[0])
    damaged_chunk = {
        0: 0,  # magic
        len(header) - 1: 0,  # salt
        first_body + 10: 0,  # first chunk's ciphertext
        len(header) + 3: 0,  # first chunk's length
        second_frame: 1,  # second chunk's final flag
        second_frame + FRAME_HEAD + 1000: 1,
        len(blob) - 1: 3,  # last chunk's tag
    }
    for position, chunk in damaged_chunk.items():
        yielded = await decrypted_before_failure(flip(blob, position))
        assert len(yielded) <= chunk * CHUNK_SIZE
        assert data.startswith(yielded)


async def test_appended_data_fails() -> None:
    blob = await encrypt(plaintext(1000))
    _, frames = split(blob)
    for extra in (b"\x00", b"garbage", frames[-1], await encrypt(b"")):
        with pytest.raises(BackupIntegrityError):
            await decrypt(blob + extra)
        # The same, when the extra bytes arrive in a later piece than the final chunk.
        with pytest.raises(BackupIntegrityError):
            await decrypt(blob + extra, sizes=[len(blob), len(extra)])


async def test_reordered_dropped_or_repeated_chunks_fail() -> None:
    header, frames = split(await encrypt(plaintext(MANY)))
    a, b, c, last = frames
    for reordered in ([b, a, c, last], [a, c, b, last], [a, c, last], [a, a, b, c, last], [a, b, c, c, last]):
        with pytest.raises(BackupIntegrityError):
            await decrypt(header + b"".join(reordered))


async def test_parts_of_another_backup_fail() -> None:
    data = plaintext(MANY)
    header, frames = split(await encrypt(data))
    other_header, other_frames = split(await encrypt(data))
    for spliced in (
        header + b"".join([frames[0], other_frames[1], *frames[2:]]),  # same key, context and plaintext
        other_header + b"".join(frames),
        header + b"".join(other_frames),
    ):
        with pytest.raises(BackupIntegrityError):
            await decrypt(spliced)
    # A whole object swapped in from another database's backup.
    foreign = await encrypt(data, context="project-1:db-2:backup-7")
    with pytest.raises(BackupIntegrityError):
        await decrypt(foreign)


async def test_forged_frame_head_fails_before_buffering() -> None:
    header, _ = split(await encrypt(b""))

    async def stream(frame_head: bytes) -> AsyncIterator[bytes]:
        yield header + frame_head
        raise AssertionError("read past a frame head that is already invalid")

    for frame_head in (b"\x00\xff\xff\xff\xff", b"\x00" + (CHUNK_SIZE + TAG_SIZE + 1).to_bytes(4, "big"), b"\x02"):
        with pytest.raises(BackupIntegrityError):
            async for _ in decrypt_stream(stream(frame_head.ljust(FRAME_HEAD, b"\x00")), keys=KEYS, context=CONTEXT):
                pass


async def test_unknown_key_id_fails() -> None:
    blob = await encrypt(plaintext(10), keys=BackupKeys.parse(new_backup_key_spec("gone")))
    with pytest.raises(BackupIntegrityError, match="unknown key id 'gone'"):
        await decrypt(blob)


async def test_old_key_still_decrypts_after_rotation() -> None:
    old_spec, new_spec = new_backup_key_spec("old"), new_backup_key_spec("new")
    old_keys = BackupKeys.parse(old_spec)
    rotated = BackupKeys.parse(f"{old_spec},{new_spec}")
    assert rotated.current == "new"
    assert Encryptor(rotated, context=CONTEXT).key_id == "new"

    data = plaintext(CHUNK_SIZE + 10)
    old_blob = await encrypt(data, keys=old_keys)
    new_blob = await encrypt(data, keys=rotated)
    assert b"".join(await decrypt(old_blob, keys=rotated)) == data
    assert b"".join(await decrypt(new_blob, keys=rotated)) == data
    assert split(new_blob)[0][len(MAGIC) + 2 : -SALT_SIZE] == b"new"
    with pytest.raises(BackupIntegrityError, match="unknown key id 'new'"):
        await decrypt(new_blob, keys=old_keys)


def test_encryptor_emits_only_complete_chunks() -> None:
    encryptor = Encryptor(KEYS, context=CONTEXT)
    assert encryptor.key_id == "k1"
    assert encryptor.update(plaintext(CHUNK_SIZE - 1)) == b""
    assert len(encryptor.update(b"x")) == FRAME_HEAD + CHUNK_SIZE + TAG_SIZE
    assert len(encryptor.update(plaintext(2 * CHUNK_SIZE + 5))) == 2 * (FRAME_HEAD + CHUNK_SIZE + TAG_SIZE)
    assert len(encryptor.finalize()) == FRAME_HEAD + 5 + TAG_SIZE
    with pytest.raises(RuntimeError):
        encryptor.update(b"late")
    with pytest.raises(RuntimeError):
        encryptor.finalize()


def test_parse_keys() -> None:
    k1, k2 = new_backup_key_spec("k1"), new_backup_key_spec("key-2")
    keys = BackupKeys.parse(f" {k1} , {k2} ")
    assert keys.current == "key-2"
    assert keys.keys["k1"] == base64.b64decode(k1.split(":")[1])
    assert len(keys.keys["key-2"]) == 32
    assert BackupKeys.parse(f"{k1},{k2}", current="k1").current == "k1"
    assert k1.split(":")[1] not in repr(keys)


@pytest.mark.parametrize(
    ("spec", "current", "message"),
    [
        ("", None, "<key id>:<base64 key>"),
        ("k1", None, "<key id>:<base64 key>"),
        ("k1:", None, "<key id>:<base64 key>"),
        (":" + base64.b64encode(bytes(32)).decode(), None, "<key id>:<base64 key>"),
        (new_backup_key_spec() + ",", None, "<key id>:<base64 key>"),
        ("K1:" + base64.b64encode(bytes(32)).decode(), None, "must match"),
        ("k_1:" + base64.b64encode(bytes(32)).decode(), None, "must match"),
        ("a" * 33 + ":" + base64.b64encode(bytes(32)).decode(), None, "must match"),
        ("k1:not base64!", None, "not valid base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), None, "must be 32 bytes"),
        (f"{new_backup_key_spec()},{new_backup_key_spec()}", None, "listed twice"),
        (new_backup_key_spec(), "k2", "not among the listed keys"),
    ],
)
def test_parse_keys_rejects_malformed_specs(spec: str, current: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackupKeys.parse(spec, current)


def test_new_key_spec_rejects_bad_key_id() -> None:
    with pytest.raises(ValueError, match="must match"):
        new_backup_key_spec("Bad Id")
