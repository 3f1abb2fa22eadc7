"""The object store on an S3 bucket (AWS or any S3-compatible service), through aioboto3.

``put`` buffers chunks until a part is full (``part_size``; S3 wants at least 5 MiB for every part
but the last). An object that never fills a part is written with one PutObject; a larger one with a
multipart upload: CreateMultipartUpload when the first part is full, UploadPart per part, and
CompleteMultipartUpload at the end. Either way S3 makes the object visible only when the last
request succeeds. If the chunk iterator raises or the caller is cancelled, the multipart upload is
aborted (shielded from cancellation) so no parts stay stored; one left by a killed process shows up
in ListMultipartUploads, which is what ``incomplete_uploads`` and ``abort_incomplete`` read.

Every upload request carries a CRC32 of its body (botocore's default for PutObject); a multipart
upload is created with that algorithm and completed with the checksum of each part, as S3 then
requires, so S3 verifies every byte it stores.

The store may live under a key prefix of the bucket (``s3://bucket/prefix``): every key is
prefixed on the way in and stripped on the way out. One client is opened on first use and reused
until ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from infra.object_store import CHUNK_SIZE, ObjectNotFound, S3Options, check_key, check_prefix

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

_MISSING = ("404", "NoSuchKey", "NotFound")
CLIENT_CONFIG = AioConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"})
"""A request that hangs fails after a minute and is retried, rather than holding a backup forever."""


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/") + "/") if prefix.strip("/") else ""
        self.options = options or S3Options()
        self._session = aioboto3.Session()
        self._client: S3Client | None = None
        self._exit = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        name = self.prefix + check_key(key)
        s3 = await self._s3()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        pending: list[bytes] = []
        buffered = size = 0
        try:
            async for chunk in chunks:
                pending.append(chunk)
                buffered += len(chunk)
                size += len(chunk)
                if buffered >= self.options.part_size:
                    if upload_id is None:
                        upload_id = await self._create_upload(s3, name)
                    body = b"".join(pending)
                    pending, buffered = [], 0
                    parts.append(await self._upload_part(s3, name, upload_id, len(parts) + 1, body))
            if upload_id is None:
                await s3.put_object(Bucket=self.bucket, Key=name, Body=b"".join(pending))
                return size
            if pending:
                parts.append(await self._upload_part(s3, name, upload_id, len(parts) + 1, b"".join(pending)))
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort_quietly(s3, name, upload_id))
            raise
        return size

    def get(self, key: str) -> AsyncIterator[bytes]:
        return self._read(self.prefix + check_key(key), key)

    async def _read(self, name: str, key: str) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _is_missing(error):
                raise ObjectNotFound(key) from None
            raise
        body = response["Body"]
        try:
            chunk = bytearray()
            while data := await body.read(CHUNK_SIZE - len(chunk)):
                chunk += data
                if len(chunk) == CHUNK_SIZE:
                    yield bytes(chunk)
                    chunk.clear()
            if chunk:
                yield bytes(chunk)
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return head["ContentLength"]

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self.prefix + check_key(key))

    async def keys(self, prefix: str) -> list[str]:
        s3 = await self._s3()
        found: list[str] = []
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + check_prefix(prefix)
        )
        async for page in pages:
            found.extend(item["Key"].removeprefix(self.prefix) for item in page.get("Contents", []))
        return sorted(found)

    async def incomplete_uploads(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in await self._uploads(prefix))

    async def abort_incomplete(self, prefix: str) -> int:
        s3 = await self._s3()
        aborted = 0
        for key, upload_id in await self._uploads(prefix):
            try:
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
            else:
                aborted += 1
        return aborted

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()

    async def _s3(self) -> S3Client:
        async with self._opening:
            if self._client is None:
                options = self.options
                self._client = await self._exit.enter_async_context(
                    self._session.client(
                        "s3",
                        region_name=options.region,
                        endpoint_url=options.endpoint_url,
                        aws_access_key_id=options.access_key_id,
                        aws_secret_access_key=options.secret_access_key,
                        config=CLIENT_CONFIG,
                    )
                )
            return self._client

    async def _create_upload(self, s3: S3Client, name: str) -> str:
        created = await s3.create_multipart_upload(Bucket=self.bucket, Key=name, ChecksumAlgorithm="CRC32")
        return created["UploadId"]

    async def _upload_part(
        self, s3: S3Client, name: str, upload_id: str, number: int, body: bytes
    ) -> CompletedPartTypeDef:
        response = await s3.upload_part(
            Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="CRC32"
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if checksum := response.get("ChecksumCRC32"):  # S3-compatible services may not return it
            part["ChecksumCRC32"] = checksum
        return part

    async def _abort_quietly(self, s3: S3Client, name: str, upload_id: str) -> None:
        """Abort a failed put's upload; if that fails too, the put's own error is the one to report."""
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except Exception:
            log.warning(
                "could not abort upload %s of %s; abort_incomplete will remove it", upload_id, name, exc_info=True
            )

    async def _uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload in progress under prefix."""
        s3 = await self._s3()
        found: list[tuple[str, str]] = []
        pages = s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix + check_prefix(prefix)
        )
        async for page in pages:
            found.extend((item["Key"].removeprefix(self.prefix), item["UploadId"]) for item in page.get("Uploads", []))
        return found


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING
