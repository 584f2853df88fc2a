"""Result cache: key stability and sensitivity, hits and misses, and a Redis outage that is only a miss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from serve.artifacts import ArtifactRef
from serve.cache import (
    CacheBackend,
    CachedResult,
    MemoryResultCache,
    ResultCache,
    cache_key,
    deterministic_seed,
    normalise_prompt,
)
from serve.params import GenerationParams
from serve.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.conftest import RedisServer

BASE: dict[str, Any] = {
    "model_version": "wan2.2-ti2v-5b@1",
    "prompt": "a red fox in the snow",
    "negative_prompt": "blurry",
    "width": 1280,
    "height": 704,
    "num_frames": 121,
    "fps": 24,
    "num_inference_steps": 50,
    "guidance_scale": 5.0,
    "seed": 42,
    "scheduler": "unipc",
    "scope": "default",
}


def key(**overrides: Any) -> str:
    fields = {**BASE, **overrides}
    model_version, scope = fields.pop("model_version"), fields.pop("scope")
    return cache_key(GenerationParams(**fields), model_version=model_version, scope=scope)


class ParamsWithANewField(GenerationParams):
    """What GenerationParams looks like after someone adds a field to the API."""

    motion_strength: float = 0.5


def test_a_new_generation_field_is_in_the_key_by_construction() -> None:
    fields = {k: v for k, v in BASE.items() if k not in ("model_version", "scope")}
    low = ParamsWithANewField(**fields, motion_strength=0.1)
    high = ParamsWithANewField(**fields, motion_strength=0.9)
    assert cache_key(low, model_version="m", scope="s") != cache_key(high, model_version="m", scope="s")


def test_further_inputs_such_as_an_image_digest_change_the_key() -> None:
    params = GenerationParams(**{k: v for k, v in BASE.items() if k not in ("model_version", "scope")})
    plain = cache_key(params, model_version="m", scope="s")
    assert cache_key(params, model_version="m", scope="s", image="sha256:aa") != plain
    assert cache_key(params, model_version="m", scope="s", image="sha256:aa") != cache_key(
        params, model_version="m", scope="s", image="sha256:bb")


def result(tag: bytes = b"mp4") -> CachedResult:
    """References to a video and its thumbnail (the cache never sees the bytes)."""
    return CachedResult(video=ArtifactRef.of("t/team-a", tag, "video/mp4"),
                        thumbnail=ArtifactRef.of("t/team-a", tag + b"-png", "image/png"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(params=["memory", "redis"], loop_scope="session")
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    if request.param == "memory":
        yield MemoryResultCache()
        return
    redis_cache = ResultCache(request.getfixturevalue("redis_url"))
    yield redis_cache
    await redis_cache.aclose()


def test_key_is_a_sha256_hex_digest_and_stable() -> None:
    assert key() == key()
    assert len(key()) == 64 and int(key(), 16) >= 0


@pytest.mark.parametrize(
    "variant",
    ["  a red fox in the snow  ", "a  red\tfox\nin the snow", "a red fox in the snow"],
)
def test_whitespace_variants_of_the_prompt_share_a_key(variant: str) -> None:
    assert key(prompt=variant) == key()


def test_fullwidth_prompt_shares_the_key_of_its_plain_form() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in BASE["prompt"])
    assert fullwidth != BASE["prompt"]
    assert key(prompt=fullwidth) == key()


def test_prompt_case_changes_the_key() -> None:
    assert key(prompt="A Red Fox in the snow") != key()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_version", "wan2.2-ti2v-5b@2"),
        ("prompt", "a red fox in the rain"),
        ("negative_prompt", "grainy"),
        ("width", 704),
        ("height", 1280),
        ("num_frames", 81),
        ("fps", 16),
        ("num_inference_steps", 30),
        ("guidance_scale", 4.5),
        ("seed", 43),
        ("scheduler", "dpm++"),
        ("scope", "acme"),
    ],
)
def test_every_pixel_changing_parameter_changes_the_key(field: str, value: Any) -> None:
    assert key(**{field: value}) != key()


def test_integral_guidance_scale_keys_like_its_float() -> None:
    assert key(guidance_scale=5) == key(guidance_scale=5.0)


def test_a_blank_negative_prompt_keys_like_an_empty_one() -> None:
    assert key(negative_prompt="  \t ") == key(negative_prompt="")


def test_normalise_prompt_keeps_case() -> None:
    assert normalise_prompt("  A  Fox\u3000") == "A Fox"


@given(st.text())
def test_deterministic_seed_is_stable_and_in_range(prompt: str) -> None:
    seed = deterministic_seed(prompt)
    assert seed == deterministic_seed(prompt)
    assert 0 <= seed < 2**31


def test_deterministic_seed_ignores_whitespace_and_differs_per_prompt() -> None:
    assert deterministic_seed(" a  fox ") == deterministic_seed("a fox")
    assert deterministic_seed("a fox") != deterministic_seed("a cat")


@pytest.mark.asyncio(loop_scope="session")
async def test_get_before_put_misses_and_after_put_hits(cache: CacheBackend) -> None:
    assert await cache.get(key()) is None
    await cache.put(key(), result(), ttl=60)
    assert await cache.get(key()) == result()
    assert await cache.get(key(seed=7)) is None


@pytest.mark.asyncio(loop_scope="session")
async def test_redis_entry_expires_after_its_ttl(redis_url: str) -> None:
    cache = ResultCache(redis_url)
    await cache.put(key(), result(), ttl=1)
    assert await cache.get(key()) is not None
    await asyncio.sleep(1.1)
    assert await cache.get(key()) is None
    await cache.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_redis_entry_is_shared_between_replicas(redis_url: str) -> None:
    writer, reader = ResultCache(redis_url), ResultCache(redis_url)
    await writer.put(key(), result(), ttl=60)
    assert await reader.get(key()) == result()
    await writer.aclose()
    await reader.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_redis_down_is_a_fast_miss_and_a_silent_put(redis_url: str, redis_server: RedisServer) -> None:
    errors: list[str] = []
    cache = ResultCache(redis_url, on_redis_error=errors.append)
    await cache.put(key(), result(), ttl=60)
    with redis_server.down():
        started = time.monotonic()
        assert await cache.get(key()) is None
        await cache.put(key(seed=1), result(), ttl=60)
        elapsed = time.monotonic() - started
    await cache.aclose()
    assert elapsed < 1.0
    assert errors == ["cache.get", "cache.put"]


@pytest.mark.asyncio(loop_scope="session")
async def test_hung_redis_costs_one_short_timeout_then_is_skipped(redis_url: str, redis_server: RedisServer) -> None:
    cache = ResultCache(redis_url)
    await cache.put(key(), result(), ttl=60)
    with redis_server.hung():
        started = time.monotonic()
        assert await cache.get(key()) is None
        first = time.monotonic() - started
        assert await cache.get(key()) is None
        second = time.monotonic() - started - first
    await cache.aclose()
    assert first < 1.0
    assert second < 0.05


@pytest.mark.asyncio(loop_scope="session")
async def test_redis_cache_recovers_by_itself_after_an_outage(redis_server: RedisServer, redis_url: str) -> None:
    link = RedisLink(redis_url, cooldown_s=0.1)
    cache = ResultCache(link)
    with redis_server.down():
        assert await cache.get(key()) is None
        assert not link.healthy
    await asyncio.sleep(0.15)
    await cache.put(key(), result(), ttl=60)
    assert await cache.get(key()) == result()
    assert link.healthy
    await link.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_memory_cache_evicts_least_recently_used_beyond_max_entries() -> None:
    cache = MemoryResultCache(max_entries=2)
    await cache.put("a", result(b"a"), ttl=60)
    await cache.put("b", result(b"b"), ttl=60)
    await cache.get("a")  # "b" is now the least recently used
    await cache.put("c", result(b"c"), ttl=60)
    assert [await cache.get(k) is not None for k in "abc"] == [True, False, True]
    assert len(cache) == 2


@pytest.mark.asyncio(loop_scope="session")
async def test_a_redis_entry_is_a_small_reference_not_the_video(redis_url: str, redis_server: RedisServer) -> None:
    cache = ResultCache(redis_url)
    big = CachedResult(video=ArtifactRef.of("shared", b"x" * 2_000_000, "video/mp4"),
                       thumbnail=ArtifactRef.of("shared", b"png", "image/png"))
    await cache.put(key(), big, ttl=60)
    with redis_server.client() as client:
        stored = client.get(f"wanserve:cache:{key()}")
    assert stored is not None and len(stored) < 1000
    assert await cache.get(key()) == big
    await cache.aclose()


@pytest.mark.asyncio(loop_scope="session")
async def test_memory_cache_entry_expires_after_its_ttl() -> None:
    clock = FakeClock()
    cache = MemoryResultCache(clock=clock)
    await cache.put("k", result(), ttl=10)
    clock.now += 9.9
    assert await cache.get("k") is not None
    clock.now += 0.1
    assert await cache.get("k") is None
    assert len(cache) == 0
