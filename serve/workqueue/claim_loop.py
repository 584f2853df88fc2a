"""A router replica's worker side: claim jobs while there is room, run each under a renewed lease, drain.

The handler contract is small. ``run(lease)`` runs the job and records its final outcome (completed,
or failed with a reason: guarded by `WorkQueue.complete_once`), then returns; the loop acks. A
``poisoned`` lease goes to ``give_up(lease)`` instead, which records the job failed with
`Lease.give_up_reason`; the loop acks it too. A handler that raises leaves the job to its lease:
nobody renews it, and after ``lease_s`` a replica claims it again, counted as an interruption, so
a job that keeps crashing its handler ends poisoned (and the wait is the retry's backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping

from serve.workqueue.lease import Lease, WorkQueue, WorkQueueUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[Lease], Awaitable[None]]


class ClaimLoop:
    """Claims jobs for this replica, at most ``capacity[lane]`` running per lane, lanes in ``capacity``'s order.

    A lane's capacity is its own: batch jobs filling the batch capacity never keep a realtime job
    waiting in the queue. ``wait_s`` bounds each claim's wait, and so how long a drain waits for the
    claim in progress.
    """

    def __init__(
        self,
        queue: WorkQueue,
        run: Handler,
        give_up: Handler,
        *,
        capacity: Mapping[str, int],
        wait_s: float = 1.0,
        lost: Handler | None = None,
    ) -> None:
        self.queue = queue
        self._run = run
        self._give_up = give_up
        # Called when a running job's lease is lost: another replica took it, or a DELETE removed it.
        self._lost = lost
        self.capacity = dict(capacity)
        self.wait_s = wait_s
        self._leases: dict[asyncio.Task[None], Lease] = {}
        self._room = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def running(self) -> dict[str, int]:
        """Jobs this replica runs now, per lane."""
        counts = dict.fromkeys(self.capacity, 0)
        for lease in self._leases.values():
            counts[lease.lane] += 1
        return counts

    @property
    def alive(self) -> bool:
        """False once the loop has stopped claiming for good (drained, or it died): the replica's health check."""
        return self._loop_task is not None and not self._loop_task.done()

    def start(self) -> None:
        """Start claiming, in the running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._claim_forever(), name="claim-loop")

    def resize(self, capacity: Mapping[str, int]) -> None:
        """Hold at most ``capacity[lane]`` jobs from now on (the stages were scaled); jobs held stay."""
        self.capacity = dict(capacity)
        self._room.set()

    async def drain(self, timeout_s: float, cancel_grace_s: float = 2.0) -> int:
        """Stop claiming; let running jobs finish for up to ``timeout_s``; hand the rest back at once.

        Returns how many jobs were handed back. The rest are cancelled, and hand themselves back;
        any still running ``cancel_grace_s`` later (a cancel swallowed inside a Redis call) are handed
        back from here. Call it from the replica's shutdown hook with ``timeout_s`` about ten seconds
        inside Serve's ``graceful_shutdown_timeout_s``, so the hand-back finishes before the kill.
        """
        self._stopping = True
        self._room.set()
        if self._loop_task is not None:
            # The claim in progress returns within wait_s; a lease it brings back is handed back.
            done, _ = await asyncio.wait([self._loop_task], timeout=self.wait_s + 1.0)
            if not done:
                self._loop_task.cancel()
        tasks = list(self._leases)
        if not tasks:
            return 0
        _, unfinished = await asyncio.wait(tasks, timeout=timeout_s)
        if not unfinished:
            return 0
        for task in unfinished:
            task.cancel()
        _, stuck = await asyncio.wait(unfinished, timeout=cancel_grace_s)
        for task in stuck:
            await _quietly(self._leases[task].release(), "hand back", self._leases[task])
        return len(unfinished)

    async def _claim_forever(self) -> None:
        while not self._stopping:
            running = self.running
            lanes = [lane for lane, cap in self.capacity.items() if running[lane] < cap]
            if not lanes:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                lease = await self.queue.claim(lanes, wait_s=self.wait_s)
            except Exception:  # a bug must not stop the replica from claiming for good
                log.exception("claiming work failed; trying again")
                await asyncio.sleep(self.wait_s)
                continue
            if lease is None:
                continue
            if self._stopping:
                await _quietly(lease.release(), "hand back", lease)
                return
            task = asyncio.create_task(self._hold(lease), name=f"job-{lease.job_id}")
            self._leases[task] = lease
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._leases.pop(task, None)
        self._room.set()

    async def _hold(self, lease: Lease) -> None:
        try:
            on_lost = None if self._lost is None else functools.partial(self._lost, lease)
            async with lease.keep_alive(on_lost=on_lost):
                if lease.poisoned:
                    log.warning("job %s was interrupted %d times; failing it", lease.job_id, lease.delivery_count - 1)
                    await self._give_up(lease)
                else:
                    await self._run(lease)
        except asyncio.CancelledError:
            if self._stopping:
                await _quietly(lease.release(), "hand back", lease)
            raise
        except Exception:
            log.exception("job %s: its handler failed (delivery %d of %d); it runs again when its lease lapses",
                          lease.job_id, lease.delivery_count, lease.max_deliveries)
            return
        await _quietly(lease.ack(), "ack", lease)


async def _quietly(call: Awaitable[None], what: str, lease: Lease) -> None:
    """A failed ack or hand-back is repaired by the lease: the job comes back after ``lease_s``."""
    with contextlib.suppress(WorkQueueUnavailable):
        await call
        return
    log.warning("could not %s job %s now; its lease will return it to the queue", what, lease.job_id)
