"""Artifacts (videos, thumbnails) stored once by content and shared by reference.

`ArtifactStore` is the service's entry point; `artifact_store_from_env` builds it. Blobs live in
memory, Redis or an S3-compatible bucket (`BlobStore`); who points to them lives in an
`ArtifactLedger`. Jobs keep only an `ArtifactRef`. See docs/artifacts.md.
"""

from serve.artifacts.blobs import BlobStore, MemoryBlobStore
from serve.artifacts.config import ArtifactStoreConfigError, artifact_store_from_env
from serve.artifacts.errors import ArtifactGone, ArtifactStoreUnavailable
from serve.artifacts.ledger import ArtifactLedger, MemoryLedger, Reference
from serve.artifacts.redis_blobs import RedisBlobStore
from serve.artifacts.redis_ledger import RedisLedger
from serve.artifacts.ref import SHARED_OWNER, ArtifactRef, MediaType, tenant_owner
from serve.artifacts.s3_blobs import S3BlobStore
from serve.artifacts.store import ArtifactStore

__all__ = [
    "SHARED_OWNER",
    "ArtifactGone",
    "ArtifactLedger",
    "ArtifactRef",
    "ArtifactStore",
    "ArtifactStoreConfigError",
    "ArtifactStoreUnavailable",
    "BlobStore",
    "MediaType",
    "MemoryBlobStore",
    "MemoryLedger",
    "RedisBlobStore",
    "RedisLedger",
    "Reference",
    "S3BlobStore",
    "artifact_store_from_env",
    "tenant_owner",
]
