"""Which store each part of a router replica uses, as its ``AppArgs`` say: Redis when one is
configured (durable, shared by the router replicas), else this process's memory (``make run`` without
Redis, tests)."""

from __future__ import annotations

from collections.abc import Callable

from serve.app.args import AppArgs
from serve.cache import CacheBackend, MemoryResultCache, ResultCache
from serve.jobs import JobStore, MemoryJobStore, RedisJobStore
from serve.moderation import Moderator, load_block_list
from serve.redis_link import RedisLink
from serve.tenancy import MemoryQuotaState, RedisQuotaState
from serve.workqueue import RedisWorkQueue


def job_store(args: AppArgs, redis: RedisLink | None) -> JobStore:
    if redis is not None:
        return RedisJobStore(redis, args.job_ttl_seconds)
    return MemoryJobStore(args.job_ttl_seconds)


def result_cache(args: AppArgs, on_redis_error: Callable[[str], None]) -> CacheBackend:
    if args.result_cache_url:
        return ResultCache(args.result_cache_url, on_redis_error=on_redis_error)
    return MemoryResultCache()


def quota_state(redis: RedisLink | None) -> MemoryQuotaState | RedisQuotaState:
    return RedisQuotaState(redis) if redis is not None else MemoryQuotaState()


def moderator(args: AppArgs) -> Moderator:
    if args.blocklist_file:
        return Moderator(load_block_list(args.blocklist_file))
    return Moderator.from_env()


def work_queue(args: AppArgs, redis: RedisLink | None, app_name: str) -> RedisWorkQueue | None:
    """The router application's job queue in the durable Redis; one per router app, so two apps that
    share a Redis (a benchmark's second router) never run each other's jobs."""
    if redis is None:
        return None
    return RedisWorkQueue(redis, lease_s=args.work.lease_s, max_deliveries=args.work.max_deliveries,
                          prefix=f"wanserve:{{work:{app_name}}}")
