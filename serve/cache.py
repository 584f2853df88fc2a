"""Result cache: identical requests get the stored mp4 without touching a GPU stage.

The key is a hash of everything that changes the pixels (the model version and every generation
parameter, by construction, with the prompt normalised) plus a scope (e.g. the tenant, so one tenant's
results are never served to another). A request without a seed gets one derived from its prompt,
so hot prompts hit instead of each drawing a fresh random seed.

`ResultCache` is Redis-backed and treats Redis as optional: an error is a miss (or a skipped
write), never an exception. `MemoryResultCache` is the bounded in-process default.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from serve.artifacts.ref import ArtifactRef
from serve.params import GenerationParams
from serve.redis_link import ErrorHook, RedisLink, RedisRequestError, RedisUnavailable

# Bump when the key's inputs or their encoding change, so old entries stop matching.
CACHE_KEY_VERSION = 2

_WHITESPACE = re.compile(r"\s+")


def normalise_prompt(prompt: str) -> str:
    """NFKC, whitespace collapsed and stripped. Case is kept: it changes the text embedding."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", prompt)).strip()


def cache_key(params: GenerationParams, *, model_version: str, scope: str, **inputs: str) -> str:
    """sha256 hex of the canonical JSON of every input that changes the generated video.

    Every field of ``params`` is in the key by construction (a field added to GenerationParams changes
    the key without touching this function); ``inputs`` are further content digests (a reference
    image's, say). Prompts are normalised first, so whitespace and NFKC variants share a key.
    """
    fields = params.model_dump(mode="json")
    fields["prompt"] = normalise_prompt(fields["prompt"])
    fields["negative_prompt"] = normalise_prompt(fields.get("negative_prompt") or "")
    canonical = {"v": CACHE_KEY_VERSION, "model_version": model_version, "scope": scope, "params": fields,
                 "inputs": dict(sorted(inputs.items()))}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def deterministic_seed(prompt: str, *, negative_prompt: str | None = None, model_version: str = "") -> int:
    """A stable seed in [0, 2**31) for a request that gave none (the prompt is normalised first)."""
    blob = "\x00".join([model_version, normalise_prompt(prompt), normalise_prompt(negative_prompt or "")])
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "big") & 0x7FFF_FFFF


class CachedResult(BaseModel):
    """A finished generation, by reference: its H.264 mp4 and the PNG of its first frame (serve/artifacts).

    The cache holds these small references, never the bytes: a hit links the new job to the stored
    artifacts, so a thousand hits cost one copy of the video.
    """

    model_config = ConfigDict(frozen=True)

    video: ArtifactRef
    thumbnail: ArtifactRef


class CacheBackend(Protocol):
    """What the ingress needs from a result cache; neither method raises when a backend is down."""

    async def get(self, key: str) -> CachedResult | None: ...

    async def put(self, key: str, result: CachedResult, ttl: int) -> None: ...

    async def aclose(self) -> None: ...


class MemoryResultCache:
    """In-process LRU of references, bounded by entries, with a TTL per entry."""

    def __init__(self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CachedResult, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def put(self, key: str, result: CachedResult, ttl: int) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (result, self._clock() + ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        return None


class ResultCache:
    """References in Redis: one small JSON string per key, with a TTL.

    Run it on an ``allkeys-lru`` Redis (``cache_redis_url``): entries may be evicted, and an evicted
    entry is only a miss. Any Redis problem is a miss on `get` and a no-op on `put`: the request then
    goes to the GPU stages as if the cache were cold.
    """

    def __init__(
        self, redis: str | RedisLink, *, on_redis_error: ErrorHook | None = None, prefix: str = "wanserve"
    ) -> None:
        self._owns_link = not isinstance(redis, RedisLink)
        self._link = redis if isinstance(redis, RedisLink) else RedisLink(redis, on_error=on_redis_error)
        self._prefix = f"{prefix}:cache:"

    async def get(self, key: str) -> CachedResult | None:
        try:
            raw = await self._link.call("cache.get", lambda r: r.get(self._prefix + key))
        except (RedisUnavailable, RedisRequestError):
            return None
        if raw is None:
            return None
        try:
            return CachedResult.model_validate_json(raw)
        except ValidationError:
            return None  # written by another version of the code: a miss

    async def put(self, key: str, result: CachedResult, ttl: int) -> None:
        blob = result.model_dump_json()
        try:
            await self._link.call("cache.put", lambda r: r.set(self._prefix + key, blob, ex=max(1, ttl)))
        except (RedisUnavailable, RedisRequestError):
            return

    async def aclose(self) -> None:
        if self._owns_link:
            await self._link.aclose()
