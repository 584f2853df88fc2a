"""Choosing the artifact store from the environment, the same way on a laptop and in the chart.

``WANSERVE_ARTIFACT_STORE``:

- ``s3://BUCKET/PREFIX``: blobs in an S3-compatible bucket, references in Redis (required).
  Endpoint and credentials: boto3's chain (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, or workload identity). Optional:
  ``WANSERVE_ARTIFACT_PUBLIC_ENDPOINT_URL`` (host that presigned URLs name, when clients reach the
  store by another address than the pods) and ``WANSERVE_ARTIFACT_LIFECYCLE_DAYS`` (the bucket's
  lifecycle rule, default 2; objects still referenced are renewed before it would remove them).
- ``redis``: blobs and references in Redis (required).
- ``memory``: both in this process.
- unset: ``redis`` when a Redis link is given, else ``memory``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlparse

from serve.artifacts.blobs import MemoryBlobStore
from serve.artifacts.ledger import MemoryLedger
from serve.artifacts.redis_blobs import RedisBlobStore
from serve.artifacts.redis_ledger import RedisLedger
from serve.artifacts.s3_blobs import S3BlobStore, s3_client
from serve.artifacts.store import ArtifactStore
from serve.redis_link import RedisLink

STORE_ENV = "WANSERVE_ARTIFACT_STORE"
PUBLIC_ENDPOINT_ENV = "WANSERVE_ARTIFACT_PUBLIC_ENDPOINT_URL"
LIFECYCLE_DAYS_ENV = "WANSERVE_ARTIFACT_LIFECYCLE_DAYS"
DEFAULT_LIFECYCLE_DAYS = 2.0

_FORMS = "'s3://BUCKET/PREFIX', 'redis' or 'memory'"


class ArtifactStoreConfigError(ValueError):
    """The environment asks for an artifact store this process cannot build; the message says what to set."""


def artifact_store_from_env(
    redis_link: RedisLink | None, environ: Mapping[str, str] | None = None
) -> ArtifactStore:
    """The store ``WANSERVE_ARTIFACT_STORE`` names; `ArtifactStoreConfigError` when it cannot be built."""
    env = os.environ if environ is None else environ
    choice = (env.get(STORE_ENV) or "").strip() or ("redis" if redis_link is not None else "memory")
    if choice == "memory":
        return ArtifactStore(MemoryBlobStore(), MemoryLedger())
    if choice == "redis":
        link = _required(redis_link, choice)
        return ArtifactStore(RedisBlobStore(link), RedisLedger(link))
    if choice.startswith("s3://"):
        link = _required(redis_link, choice)
        return ArtifactStore(_s3_blobs(choice, env), RedisLedger(link))
    raise ArtifactStoreConfigError(f"{STORE_ENV}={choice!r} is not one of {_FORMS}")


def _required(link: RedisLink | None, choice: str) -> RedisLink:
    if link is None:
        raise ArtifactStoreConfigError(
            f"{STORE_ENV}={choice!r} keeps its ledger of references in Redis, and no Redis is configured: "
            f"set WANSERVE_REDIS_URL, or unset {STORE_ENV} to keep artifacts in memory"
        )
    return link


def _s3_blobs(url: str, env: Mapping[str, str]) -> S3BlobStore:
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket or parsed.query or parsed.fragment:
        raise ArtifactStoreConfigError(f"{STORE_ENV}={url!r} must look like s3://BUCKET or s3://BUCKET/PREFIX")
    raw_days = env.get(LIFECYCLE_DAYS_ENV) or str(DEFAULT_LIFECYCLE_DAYS)
    try:
        lifecycle_days = float(raw_days)
    except ValueError:
        lifecycle_days = 0.0
    if lifecycle_days <= 0:
        raise ArtifactStoreConfigError(
            f"{LIFECYCLE_DAYS_ENV}={raw_days!r} must be a positive number of days (the bucket's lifecycle rule)")
    client = s3_client(env)
    public = env.get(PUBLIC_ENDPOINT_ENV) or None
    presign = s3_client(env, endpoint_url=public) if public else client
    return S3BlobStore(bucket, prefix, client=client, presign_client=presign, lifecycle_days=lifecycle_days)
