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
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

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


@dataclass(frozen=True)
class CachedResult:
    """A finished generation: the H.264 mp4 and a PNG of its first frame."""

    mp4: bytes
    thumbnail: bytes


class CacheBackend(Protocol):
    """What the ingress needs from a result cache; neither method raises when a backend is down."""

    async def get(self, key: str) -> CachedResult | None: ...

    async def put(self, key: str, mp4: bytes, thumbnail: bytes, ttl: int) -> None: ...

    async def aclose(self) -> None: ...


class MemoryResultCache:
    """In-process LRU bounded by total bytes, with a TTL per entry."""

    def __init__(self, max_bytes: int = 256 * 2**20, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CachedResult, float]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes held now (mp4 + thumbnail of every entry)."""
        return self._bytes

    async def get(self, key: str) -> CachedResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def put(self, key: str, mp4: bytes, thumbnail: bytes, ttl: int) -> None:
        self._drop(key)
        size = len(mp4) + len(thumbnail)
        if size > self.max_bytes:
            return  # would evict everything else and still not fit
        self._entries[key] = (CachedResult(mp4, thumbnail), self._clock() + ttl)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def aclose(self) -> None:
        return None

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0].mp4) + len(entry[0].thumbnail)


class ResultCache:
    """Results in Redis (one hash per key, `mp4` and `thumbnail` fields, with a TTL).

    Any Redis problem is a miss on `get` and a no-op on `put`: the request then goes to the GPU
    stages as if the cache were cold. The shared `RedisLink` logs the outage once, reports each
    bypassed call to its error hook, and lets Redis back in by itself.
    """

    def __init__(
        self, redis: str | RedisLink, *, on_redis_error: ErrorHook | None = None, prefix: str = "wanserve"
    ) -> None:
        self._owns_link = not isinstance(redis, RedisLink)
        self._link = redis if isinstance(redis, RedisLink) else RedisLink(redis, on_error=on_redis_error)
        self._prefix = f"{prefix}:cache:"

    async def get(self, key: str) -> CachedResult | None:
        try:
            raw = await self._link.call("cache.get", lambda r: self._hgetall(r, self._prefix + key))
        except (RedisUnavailable, RedisRequestError):
            return None
        if b"mp4" not in raw or b"thumbnail" not in raw:
            return None
        return CachedResult(raw[b"mp4"], raw[b"thumbnail"])

    async def put(self, key: str, mp4: bytes, thumbnail: bytes, ttl: int) -> None:
        try:
            await self._link.call("cache.put", lambda r: self._put(r, self._prefix + key, mp4, thumbnail, ttl))
        except (RedisUnavailable, RedisRequestError):
            return

    async def aclose(self) -> None:
        if self._owns_link:
            await self._link.aclose()

    @staticmethod
    async def _hgetall(r: Redis, key: str) -> dict[bytes, bytes]:
        raw: dict[bytes, bytes] = await r.hgetall(key)
        return raw

    @staticmethod
    async def _put(r: Redis, key: str, mp4: bytes, thumbnail: bytes, ttl: int) -> None:
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"mp4": mp4, "thumbnail": thumbnail})
            pipe.expire(key, ttl)
            await pipe.execute()
