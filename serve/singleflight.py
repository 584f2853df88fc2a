"""Single flight: concurrent identical requests share one generation.

Like Go's `singleflight.Group`: the first caller for a key starts the work, later callers with the
same key wait for it, everyone gets the same result or exception, and the key is forgotten as soon
as the work ends (so a later request starts fresh, e.g. after the result cache has it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running execution per key.

    The work runs in its own task, not in the first caller's: a client that disconnects (its
    request is cancelled) neither cancels the generation for the others waiting on it nor throws
    the GPU work away, since the result still reaches the cache and the job store.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._flights

    async def run(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        """Return the result of `factory()`, shared with every concurrent caller of `key`."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # shield: cancelling one waiter must not cancel the shared task.
        return await asyncio.shield(task)

    def join(self, key: Hashable) -> asyncio.Future[T] | None:
        """A future for the execution of `key` in flight now, or None if there is none."""
        task = self._flights.get(key)
        return None if task is None else asyncio.shield(task)

    def running_keys(self) -> list[Hashable]:
        """The keys in flight now."""
        return list(self._flights)

    def cancel(self, key: Hashable) -> bool:
        """Cancel the execution of `key` in flight (every waiter gets CancelledError); False if none."""
        task = self._flights.get(key)
        if task is None:
            return False
        task.cancel()
        return True

    def _forget(self, key: Hashable, done: asyncio.Task[T]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        if not done.cancelled():
            # Mark the exception as seen: it reached every waiter, and if every waiter left,
            # nobody is left to care; asyncio would otherwise log "exception was never retrieved".
            done.exception()
