"""Durable work: accepted jobs queued in Redis, claimed by router replicas under leases, finished once.

- `RedisWorkQueue` (Redis Streams, one stream per lane, one consumer group of router replicas) and
  `MemoryWorkQueue` (this process only, for the local mode: not durable) keep one contract,
  `WorkQueue`: `enqueue`, `claim` -> `Lease` (`renew`, `keep_alive`, `ack`, `release`),
  `complete_once`, `discard`, and per-tenant counts of unfinished jobs with an optional limit.
- `ClaimLoop` is the replica's side: claim while a lane has room, run under a renewed lease, ack,
  and drain on shutdown.
- `RedisFlightRegistry` / `MemoryFlightRegistry`: single flight across replicas, under a lease.

docs/durability.md has the rules (lease 30 s, renewal every 10 s, poison at the fourth delivery)
and what Redis must offer for any of this to be durable.
"""

from serve.workqueue.claim_loop import ClaimLoop, Handler
from serve.workqueue.flights import FlightRegistry, MemoryFlightRegistry, RedisFlightRegistry, holding
from serve.workqueue.lease import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    LANES,
    Lease,
    TenantAtLimit,
    WorkQueue,
    WorkQueueUnavailable,
    default_consumer_name,
)
from serve.workqueue.memory_queue import MemoryWorkQueue
from serve.workqueue.redis_queue import RedisWorkQueue

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_DELIVERIES",
    "LANES",
    "ClaimLoop",
    "FlightRegistry",
    "Handler",
    "Lease",
    "MemoryFlightRegistry",
    "MemoryWorkQueue",
    "RedisFlightRegistry",
    "RedisWorkQueue",
    "TenantAtLimit",
    "WorkQueue",
    "WorkQueueUnavailable",
    "default_consumer_name",
    "holding",
]
