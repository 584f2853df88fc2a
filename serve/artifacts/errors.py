"""The two ways an artifact operation fails that the service must handle differently."""

from __future__ import annotations


class ArtifactStoreUnavailable(Exception):
    """The artifact store (object store, or the Redis that holds blobs or references) cannot serve now.

    Retryable: the service fails the job with code ``artifact_store_unavailable`` (or answers 503)
    and never marks a job completed without its video. The message names the backend and the
    operation, never a credential.
    """


class ArtifactGone(LookupError):
    """The artifact a reference names no longer exists (deleted, or being deleted right now).

    For a cache hit or a single-flight follower this is a cache miss: generate the video again.
    """
