"""Encrypted, authenticated, chunked stream format for database backups.

A backup (``pg_dump`` output) is encrypted while it streams to object storage and verified
while it streams back, so neither side ever holds more than about one chunk in memory.

Byte format (version 1; integers are big-endian)::

    header = b"PGPB" | version (1 byte, 0x01) | key id length (1 byte) | key id (ASCII) | salt (32 bytes)
    frame  = final flag (1 byte, 0x00 or 0x01) | ciphertext length (4 bytes) | AES-256-GCM ciphertext + 16-byte tag
    stream = header | frame* (every frame but the last: CHUNK_SIZE plaintext bytes, flag 0) | last frame (flag 1)

    chunk i: nonce = i (12 bytes); associated data = header | context length (4 bytes) | context (UTF-8)
             | i (8 bytes) | final flag (1 byte)

Guarantees:

* Each backup gets its own data key, HKDF-SHA256(master key, salt, info names the version), from a
  fresh random salt; so the chunk nonce can simply be the chunk index and a (key, nonce) pair is
  never used twice, with no per-chunk random nonces to collide.
* Each chunk's associated data binds the header, the caller's ``context`` (which backup of which
  database this is), the chunk index and the final flag. Altering any byte, reordering or dropping
  chunks, swapping in another backup's object or chunk, cutting the stream at a chunk boundary
  (no final chunk) or mid-chunk, or appending anything after the final chunk is detected.
* Key rotation: the header names the master key id; any key still listed in ``BackupKeys`` decrypts.
* Decryption yields each chunk only after its tag has verified, but whether the stream is complete
  is known only at its end: a restore must fail (and discard what it applied) unless the
  decrypting iterator finishes without raising ``BackupIntegrityError``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK_SIZE = 1024 * 1024

MAGIC = b"PGPB"
VERSION = 1
KEY_SIZE = 32
SALT_SIZE = 32
TAG_SIZE = 16
_FRAME_HEAD_SIZE = 5  # final flag + ciphertext length
_KEY_ID = re.compile(r"[a-z0-9-]{1,32}")


class BackupIntegrityError(Exception):
    """The stored bytes are not an intact backup of this context.

    Wrong key, truncated, reordered, altered, or another backup's.
    """


@dataclass(frozen=True)
class BackupKeys:
    """Master keys by id; ``current`` encrypts new backups, every listed key still decrypts."""

    current: str
    keys: dict[str, bytes] = field(repr=False)  # never let key material reach logs

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"backup key id {key_id!r} must match [a-z0-9-]{{1,32}}")
            if len(key) != KEY_SIZE:
                raise ValueError(f"backup key {key_id!r} must be {KEY_SIZE} bytes, got {len(key)}")
        if self.current not in self.keys:
            raise ValueError(f"current backup key id {self.current!r} is not among the listed keys")

    @classmethod
    def parse(cls, spec: str, current: str | None = None) -> BackupKeys:
        """``"kid1:<base64 32 bytes>,kid2:<base64>"``; ``current`` defaults to the last listed key id."""
        keys: dict[str, bytes] = {}
        for entry in spec.split(","):
            key_id, sep, encoded = entry.strip().partition(":")
            if not sep or not key_id or not encoded:
                raise ValueError("backup key spec entries must look like '<key id>:<base64 key>'")
            if key_id in keys:
                raise ValueError(f"backup key id {key_id!r} is listed twice")
            try:
                keys[key_id] = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError(f"backup key {key_id!r} is not valid base64") from None
        return cls(current=list(keys)[-1] if current is None else current, keys=keys)


def new_backup_key_spec(key_id: str = "k1") -> str:
    """A one-key spec with a fresh random key, for ``BackupKeys.parse``."""
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"backup key id {key_id!r} must match [a-z0-9-]{{1,32}}")
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def derive_data_key(master_key: bytes, salt: bytes) -> bytes:
    """A backup's own key, from the master key its header names and the backup's random salt."""
    info = b"pgplane-backup-v%d data key" % VERSION
    return HKDF(algorithm=SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(master_key)


class _ChunkCipher:
    """The per-backup data key plus the associated data every chunk of that backup shares."""

    def __init__(self, data_key: bytes, header: bytes, context: str) -> None:
        self._aead = AESGCM(data_key)
        # The header is self-delimiting and the context is length-prefixed, so the encoding is unambiguous.
        context_bytes = context.encode()
        self._aad_prefix = header + len(context_bytes).to_bytes(4, "big") + context_bytes

    def _nonce_and_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        return index.to_bytes(12, "big"), self._aad_prefix + index.to_bytes(8, "big") + bytes([final])

    def seal(self, index: int, final: bool, plaintext: bytes) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        ciphertext = self._aead.encrypt(nonce, plaintext, aad)
        return bytes([final]) + len(ciphertext).to_bytes(4, "big") + ciphertext

    def open(self, index: int, final: bool, ciphertext: bytes) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise BackupIntegrityError(
                f"backup chunk {index} failed authentication: wrong key or context, or altered, reordered "
                "or foreign data"
            ) from None


class Encryptor:
    """Incremental: feed plaintext pieces of any size; get back ciphertext bytes to write."""

    def __init__(self, keys: BackupKeys, *, context: str) -> None:
        self.key_id = keys.current
        salt = os.urandom(SALT_SIZE)
        key_id = self.key_id.encode()
        self._header = MAGIC + bytes([VERSION, len(key_id)]) + key_id + salt
        self._cipher = _ChunkCipher(derive_data_key(keys.keys[self.key_id], salt), self._header, context)
        self._pending = bytearray()
        self._index = 0
        self._finalized = False

    def header(self) -> bytes:
        """Must be written before anything ``update`` or ``finalize`` returns."""
        return self._header

    def update(self, data: bytes) -> bytes:
        """Zero or more complete encrypted chunks; keeps under CHUNK_SIZE plaintext bytes pending."""
        self._check_open()
        self._pending += data
        frames = []
        while len(self._pending) >= CHUNK_SIZE:
            frames.append(self._cipher.seal(self._index, False, bytes(self._pending[:CHUNK_SIZE])))
            del self._pending[:CHUNK_SIZE]
            self._index += 1
        return b"".join(frames)

    def finalize(self) -> bytes:
        """The last chunk, flagged final; it may carry 0 plaintext bytes."""
        self._check_open()
        self._finalized = True
        frame = self._cipher.seal(self._index, True, bytes(self._pending))
        self._pending.clear()
        return frame

    def _check_open(self) -> None:
        # Chunks after the final one would make a stream no reader accepts.
        if self._finalized:
            raise RuntimeError("Encryptor already finalized")


class _Decryptor:
    """Parses arbitrarily split input; buffers at most one frame plus the piece being fed. Once the
    header is read (``header``), ``start`` gives it the data key the header's key id and salt name."""

    def __init__(self, context: str) -> None:
        self._context = context
        self._buffer = bytearray()
        self._cipher: _ChunkCipher | None = None
        self._index = 0
        self._finished = False

    def add(self, data: bytes) -> None:
        if self._finished and data:
            raise BackupIntegrityError("backup has data after its final chunk")
        self._buffer += data

    def header(self) -> tuple[str, bytes, bytes] | None:
        """``(key id, salt, header bytes)`` once enough input arrived; ``None`` until then."""
        buffer = self._buffer
        if len(buffer) < len(MAGIC) + 2:
            return None
        if buffer[: len(MAGIC)] != MAGIC:
            raise BackupIntegrityError("not a pgplane backup (bad magic)")
        if buffer[len(MAGIC)] != VERSION:
            raise BackupIntegrityError(f"unsupported backup format version {buffer[len(MAGIC)]}")
        key_id_end = len(MAGIC) + 2 + buffer[len(MAGIC) + 1]
        header_size = key_id_end + SALT_SIZE
        if len(buffer) < header_size:
            return None
        header = bytes(buffer[:header_size])
        return header[len(MAGIC) + 2 : key_id_end].decode("ascii", "replace"), header[key_id_end:], header

    def start(self, data_key: bytes, header: bytes) -> None:
        self._cipher = _ChunkCipher(data_key, header, self._context)
        del self._buffer[: len(header)]

    @property
    def started(self) -> bool:
        return self._cipher is not None

    def chunks(self) -> Iterator[bytes]:
        """Plaintext of each complete chunk buffered, yielded as soon as its tag verifies."""
        while not self._finished and (plaintext := self._read_chunk()) is not None:
            yield plaintext

    def close(self) -> None:
        if self._cipher is None:
            raise BackupIntegrityError("backup ends before its header is complete")
        if not self._finished:
            raise BackupIntegrityError("backup is truncated: it ends before its final chunk")

    def _read_chunk(self) -> bytes | None:
        assert self._cipher is not None
        buffer = self._buffer
        if len(buffer) < _FRAME_HEAD_SIZE:
            return None
        flag, length = buffer[0], int.from_bytes(buffer[1:_FRAME_HEAD_SIZE], "big")
        if flag not in (0, 1):
            raise BackupIntegrityError(f"backup chunk {self._index} has an invalid final flag")
        # Checked before waiting for the body, so a forged length cannot make us buffer gigabytes.
        if not TAG_SIZE <= length <= CHUNK_SIZE + TAG_SIZE:
            raise BackupIntegrityError(f"backup chunk {self._index} has an impossible length {length}")
        frame_size = _FRAME_HEAD_SIZE + length
        if len(buffer) < frame_size:
            return None
        plaintext = self._cipher.open(self._index, flag == 1, bytes(buffer[_FRAME_HEAD_SIZE:frame_size]))
        del buffer[:frame_size]  # cheap: CPython's bytearray drops a prefix without moving the rest
        self._index += 1
        if flag == 1:
            self._finished = True
            if buffer:
                raise BackupIntegrityError("backup has data after its final chunk")
        return plaintext


async def encrypt_stream(chunks: AsyncIterable[bytes], *, keys: BackupKeys, context: str) -> AsyncIterator[bytes]:
    """The encrypted backup of ``chunks``: the header, then frames as each chunk fills, then the final frame."""
    encryptor = Encryptor(keys, context=context)
    yield encryptor.header()
    async for piece in chunks:
        if frames := encryptor.update(piece):
            yield frames
    yield encryptor.finalize()


KeySource = Callable[[str, bytes], Awaitable[bytes]]
"""``(key id, salt) → data key``: where a reader gets a backup's key (a key service, for the API)."""


def local_keys(keys: BackupKeys) -> KeySource:
    """The data keys derived here, from master keys this process holds (the agent)."""

    async def data_key(key_id: str, salt: bytes) -> bytes:
        master_key = keys.keys.get(key_id)
        if master_key is None:
            raise BackupIntegrityError(f"backup was encrypted with unknown key id {key_id!r}")
        return derive_data_key(master_key, salt)

    return data_key


async def decrypt_stream(
    chunks: AsyncIterable[bytes], *, keys: BackupKeys | KeySource, context: str
) -> AsyncIterator[bytes]:
    """Yields plaintext chunk by chunk, each only after its tag verified; raises BackupIntegrityError on any
    problem, including input that ends before the final chunk, or data after the final chunk."""
    source = local_keys(keys) if isinstance(keys, BackupKeys) else keys
    decryptor = _Decryptor(context)
    async for piece in chunks:
        decryptor.add(piece)
        if not decryptor.started:
            if (header := decryptor.header()) is None:
                continue
            key_id, salt, header_bytes = header
            decryptor.start(await source(key_id, salt), header_bytes)
        for plaintext in decryptor.chunks():
            yield plaintext
    decryptor.close()
