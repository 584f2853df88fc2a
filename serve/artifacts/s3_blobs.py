"""Blobs in any S3-compatible object store (AWS S3, MinIO, Ceph RGW, GCS/R2 in S3 mode) through boto3.

boto3 is synchronous; every call runs in a worker thread (`asyncio.to_thread`) so the event loop
keeps serving. Endpoint and credentials come from boto3's own chain: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, or the pod's workload identity.

Objects are written with ``If-None-Match: *`` (write once; a 412 means "already there"). A bucket
lifecycle rule may expire objects ``lifecycle_days`` after their last write as a safety net for
orphans; since a content-addressed object can be linked by a new job long after it was written,
`retain` renews an object (a server-side copy onto itself, no bytes through us) whenever the rule
would otherwise remove it before the new job expires.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from serve.artifacts.blobs import DEFAULT_CHUNK_SIZE
from serve.artifacts.errors import ArtifactStoreUnavailable
from serve.artifacts.ref import MediaType, check_key

T = TypeVar("T")

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# S3 lifecycle rules run once a day and never remove an object before N days have passed; renew
# an object this long before that moment, for clock skew between us and the store.
_RENEW_MARGIN_S = 3600.0


def s3_client(environ: Mapping[str, str] | None = None, *, endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client with short timeouts and SigV4 presigning, configured from `environ`'s AWS variables.

    Variables that are unset fall through to boto3's own chain (config files, workload identity).
    """
    env = os.environ if environ is None else environ
    config = Config(
        signature_version="s3v4",
        connect_timeout=2,
        read_timeout=30,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3",
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        endpoint_url=endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        config=config,
    )


class S3BlobStore:
    """`BlobStore` on one bucket, every key under `prefix` (``s3://BUCKET/PREFIX/{owner}/{digest}.mp4``)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        presign_client: Any = None,
        lifecycle_days: float | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else s3_client()
        # Presigned URLs may need another host than the one the pods use (an in-cluster MinIO
        # behind a public ingress); signing is local, so a second client costs nothing per call.
        self._presign_client = presign_client if presign_client is not None else self._client
        self._lifecycle_s = None if lifecycle_days is None else lifecycle_days * 86_400.0

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put_if_absent(self, key: str, data: bytes, media_type: MediaType) -> bool:
        name = self.object_key(key)
        for _ in range(3):
            try:
                await self._call("put", name, lambda: self._client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ContentType=media_type, IfNoneMatch="*"))
                return True
            except _Refused as refused:
                if refused.code in ("PreconditionFailed", "412"):
                    return False
                # 409 ConditionalRequestConflict: another write of the same key is in flight; the
                # bytes are the same, but only a finished write counts, so ask again.
                if refused.code not in ("ConditionalRequestConflict", "409"):
                    raise self._unavailable("put", name, refused.error) from refused.error
        raise ArtifactStoreUnavailable(
            f"object store s3://{self.bucket}: put {name} kept conflicting with a concurrent write; retry")

    async def get(self, key: str) -> bytes | None:
        name = self.object_key(key)
        try:
            body = await self._call("get", name, lambda: self._client.get_object(Bucket=self.bucket, Key=name)["Body"])
            data: bytes = await self._call("get", name, body.read)
            return data
        except _Refused as refused:
            self._raise_unless_missing("get", name, refused)
            return None

    async def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes] | None:
        name = self.object_key(key)
        try:
            body = await self._call("get", name, lambda: self._client.get_object(Bucket=self.bucket, Key=name)["Body"])
        except _Refused as refused:
            self._raise_unless_missing("get", name, refused)
            return None
        return self._chunks(name, body, chunk_size)

    async def _chunks(self, name: str, body: Any, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._call("read", name, lambda: body.read(chunk_size)):
                yield chunk
        except _Refused as refused:
            raise self._unavailable("read", name, refused.error) from refused.error
        finally:
            body.close()

    async def retain(self, key: str, until: float) -> bool:
        name = self.object_key(key)
        try:
            head = await self._call("head", name, lambda: self._client.head_object(Bucket=self.bucket, Key=name))
        except _Refused as refused:
            self._raise_unless_missing("head", name, refused)
            return False
        removable_at = None if self._lifecycle_s is None else head["LastModified"].timestamp() + self._lifecycle_s
        if removable_at is not None and removable_at - _RENEW_MARGIN_S < until:
            await self._renew(name, head.get("ContentType") or "application/octet-stream")
        return True

    async def _renew(self, name: str, content_type: str) -> None:
        # Copying an object onto itself with new metadata resets its Last-Modified, the date a
        # lifecycle rule counts from; the store copies it internally.
        source = {"Bucket": self.bucket, "Key": name}
        try:
            await self._call("renew", name, lambda: self._client.copy_object(
                Bucket=self.bucket, Key=name, CopySource=source, MetadataDirective="REPLACE", ContentType=content_type))
        except _Refused as refused:
            raise self._unavailable("renew", name, refused.error) from refused.error

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        try:
            await self._call("delete", name, lambda: self._client.delete_object(Bucket=self.bucket, Key=name))
        except _Refused as refused:
            raise self._unavailable("delete", name, refused.error) from refused.error

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        name = self.object_key(key)
        try:
            url: str = self._presign_client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=int(expires_s))
        except BotoCoreError as exc:  # no credentials to sign with
            raise self._unavailable("presign", name, exc) from exc
        return url

    async def aclose(self) -> None:
        return None  # boto3 clients hold no connections that need closing

    async def _call(self, op: str, name: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            raise _Refused(exc) from exc
        except BotoCoreError as exc:  # endpoint down, timeouts, no credentials
            raise self._unavailable(op, name, exc) from exc

    def _raise_unless_missing(self, op: str, name: str, refused: _Refused) -> None:
        if refused.code not in _MISSING:
            raise self._unavailable(op, name, refused.error) from refused.error

    def _unavailable(self, op: str, name: str, exc: Exception) -> ArtifactStoreUnavailable:
        detail = f"{type(exc).__name__}: {exc}"
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code in ("AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            detail += " (check the bucket name and the credentials' permissions)"
        elif isinstance(exc, NoCredentialsError):
            detail += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the pod a workload identity)"
        return ArtifactStoreUnavailable(f"object store s3://{self.bucket}: {op} {name} failed ({detail}); retry later")


class _Refused(Exception):
    """The store answered with an error code; the caller decides whether it means "not there"."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = str(error.response.get("Error", {}).get("Code", ""))
