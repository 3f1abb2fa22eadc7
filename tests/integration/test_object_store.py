"""The object store contract, proven once for both implementations: every test runs against a
directory (FilesystemStore) and against a fresh bucket on the session's S3 server (S3Store under a
key prefix, 5 MiB parts). Only real stores: files on disk and S3 requests over HTTP.

Only the crash test knows which store it has, to leave behind what a killed process would: a
temporary file, or a multipart upload that is never completed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aioboto3
import pytest

from devstack.s3_server import S3Server
from infra.object_store import ObjectNotFound, ObjectStore, open_store
from infra.object_store.filesystem import FilesystemStore
from infra.object_store.s3 import S3Store
from tests.s3 import s3_server  # noqa: F401

MiB = 1024 * 1024
PART = 5 * MiB
KEY = "backups/p1/d1/b1.pgdump.enc"


@pytest.fixture(params=["filesystem", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "filesystem":
        opened = open_store((tmp_path / "objects").as_uri())
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"test-{uuid.uuid4().hex}"
        await asyncio.to_thread(server.create_bucket, bucket)
        opened = open_store(f"s3://{bucket}/tenant-a", s3=replace(server.options(), part_size=PART))
    try:
        yield opened
    finally:
        await opened.close()


def random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def stream(data: bytes, chunk: int = MiB + 7) -> AsyncIterator[bytes]:
    """Chunks that do not line up with part boundaries."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def read(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


async def assert_nothing_at(store: ObjectStore, key: str) -> None:
    assert await store.size(key) is None
    assert key not in await store.keys("")
    assert await store.incomplete_uploads("") == []


async def test_multipart_data_round_trips(store: ObjectStore) -> None:
    data = random_bytes(3 * PART + 12345)

    assert await store.put(KEY, stream(data)) == len(data)

    chunks = [chunk async for chunk in store.get(KEY)]
    assert len(chunks) > 1
    assert b"".join(chunks) == data
    assert await store.size(KEY) == len(data)
    assert await store.keys("") == [KEY]
    assert await store.incomplete_uploads("") == []


@pytest.mark.parametrize("data", [b"", b"small"], ids=["empty", "small"])
async def test_objects_smaller_than_a_part_round_trip(store: ObjectStore, data: bytes) -> None:
    assert await store.put(KEY, stream(data)) == len(data)

    assert await read(store, KEY) == data
    assert await store.size(KEY) == len(data)
    assert await store.keys("") == [KEY]


async def test_keys_lists_complete_objects_under_a_prefix_sorted(store: ObjectStore) -> None:
    keys = [
        "backups/p2/d1/x.enc",
        "backups/p1/d2/c.enc",
        "backups/p1/d1/b.enc",
        "backups/p10/d1/y.enc",
        "backups/p1/d1/a.enc",
        "other.txt",
    ]
    for key in keys:
        await store.put(key, stream(key.encode()))

    assert await store.keys("") == sorted(keys)
    assert await store.keys("backups/p1/") == ["backups/p1/d1/a.enc", "backups/p1/d1/b.enc", "backups/p1/d2/c.enc"]
    assert await store.keys("backups/p1/d1/") == ["backups/p1/d1/a.enc", "backups/p1/d1/b.enc"]
    assert await store.keys("backups/p1/d1/a") == ["backups/p1/d1/a.enc"]
    assert await store.keys("backups/p1") == sorted(k for k in keys if k.startswith("backups/p1"))
    assert await store.keys("backups/p3/") == []
    assert await store.keys("nothing") == []


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await store.put(KEY, stream(random_bytes(PART + 1)))

    assert await store.put(KEY, stream(b"replacement")) == len(b"replacement")

    assert await read(store, KEY) == b"replacement"
    assert await store.size(KEY) == len(b"replacement")
    assert await store.keys("") == [KEY]


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put(KEY, stream(b"data"))
    await store.put("backups/p1/d2/kept.enc", stream(b"kept"))

    await store.delete("backups/p1")  # the "directory" of KEY is no object
    await store.delete(f"{KEY}/below")  # nor is anything "below" KEY
    assert await store.size(KEY) == len(b"data")

    await store.delete(KEY)
    await store.delete(KEY)
    await store.delete("backups/never/written.enc")

    await assert_nothing_at(store, KEY)
    with pytest.raises(ObjectNotFound):
        await read(store, KEY)
    assert await store.keys("") == ["backups/p1/d2/kept.enc"]


async def test_a_missing_object_is_not_found(store: ObjectStore) -> None:
    await store.put("backups/p1/d1/other.enc", stream(b"data"))

    with pytest.raises(ObjectNotFound):
        await read(store, KEY)
    with pytest.raises(ObjectNotFound):
        await read(store, "backups/p1/d1")  # a "directory" is no object
    assert await store.size(KEY) is None
    assert await store.size("backups/p1") is None


async def test_a_failing_source_leaves_no_object_and_no_upload(store: ObjectStore) -> None:
    old = "backups/p1/d1/old.enc"
    await store.put(old, stream(b"previous backup"))

    async def breaks_after_two_parts() -> AsyncIterator[bytes]:
        for _ in range(2 * PART // MiB):
            yield random_bytes(MiB)
        raise RuntimeError("source broke")

    for key in (KEY, old):
        with pytest.raises(RuntimeError, match="source broke"):
            await store.put(key, breaks_after_two_parts())

    await assert_nothing_at(store, KEY)
    assert await store.keys("") == [old]
    assert await read(store, old) == b"previous backup"


async def test_a_cancelled_put_leaves_nothing(store: ObjectStore) -> None:
    stalled = asyncio.Event()

    async def stalls_after_two_parts() -> AsyncIterator[bytes]:
        for _ in range(2 * PART // MiB):
            yield random_bytes(MiB)
        stalled.set()
        await asyncio.Future()

    upload = asyncio.create_task(store.put(KEY, stalls_after_two_parts()))
    await asyncio.wait_for(stalled.wait(), timeout=60)

    assert await store.incomplete_uploads("") == [KEY]  # two parts are stored, the object is not visible
    assert await store.size(KEY) is None
    assert await store.keys("") == []

    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    await assert_nothing_at(store, KEY)


async def leave_incomplete_upload(store: ObjectStore, key: str) -> None:
    """What a process killed in the middle of ``put`` leaves behind."""
    if isinstance(store, FilesystemStore):
        partial = store.root / f"{key}.partial-x"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"half a backup")
        return
    assert isinstance(store, S3Store)
    options = store.options
    raw = aioboto3.Session().client(
        "s3",
        region_name=options.region,
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
    )
    async with raw as s3:
        name = store.prefix + key
        upload = await s3.create_multipart_upload(Bucket=store.bucket, Key=name)
        await s3.upload_part(
            Bucket=store.bucket, Key=name, UploadId=upload["UploadId"], PartNumber=1, Body=b"half a backup"
        )


async def test_an_abandoned_upload_is_reported_and_aborted(store: ObjectStore) -> None:
    await store.put("backups/p1/d1/b0.pgdump.enc", stream(b"complete"))
    await leave_incomplete_upload(store, KEY)
    await leave_incomplete_upload(store, "other/x.enc")

    assert await store.incomplete_uploads("backups/") == [KEY]
    assert await store.incomplete_uploads("") == [KEY, "other/x.enc"]
    assert await store.keys("") == ["backups/p1/d1/b0.pgdump.enc"]
    assert await store.size(KEY) is None

    assert await store.abort_incomplete("backups/p1/") == 1
    assert await store.incomplete_uploads("") == ["other/x.enc"]
    assert await store.abort_incomplete("") == 1
    assert await store.abort_incomplete("") == 0

    assert await store.incomplete_uploads("") == []
    assert await store.keys("") == ["backups/p1/d1/b0.pgdump.enc"]
    assert await read(store, "backups/p1/d1/b0.pgdump.enc") == b"complete"


BAD_KEYS = [
    "",
    "../escape.enc",
    "backups/../../escape.enc",
    "backups/p1/..",
    "/etc/passwd",
    "backups//b.enc",
    "backups/./b.enc",
    "backups/",
    "back ups/b.enc",
    "backups\\b.enc",
    "bäckups/b.enc",
    "backups/b.enc\n",
    "backups/b.enc.partial-1",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, stream(b"data"))
    with pytest.raises(ValueError):
        await read(store, key)
    with pytest.raises(ValueError):
        await store.size(key)
    with pytest.raises(ValueError):
        await store.delete(key)

    assert await store.keys("") == []
    assert await store.incomplete_uploads("") == []


@pytest.mark.parametrize("prefix", ["../", "/backups", "backups//", "backups/../", "back ups", "x.partial-"])
async def test_invalid_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        await store.keys(prefix)
    with pytest.raises(ValueError):
        await store.incomplete_uploads(prefix)
    with pytest.raises(ValueError):
        await store.abort_incomplete(prefix)


@pytest.mark.parametrize(
    "url",
    ["", "/abs/dir", "file://host/abs/dir", "file:relative", "s3://", "s3:///prefix", "gs://bucket", "file:///a?x=1"],
)
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)
