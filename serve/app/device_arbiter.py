"""One device, one priority: batch work on a device waits while realtime work is in flight on it.

Stage replicas that share a device (co-located on one GPU, or all on this host's CPU) would
otherwise run batch steps and chunks beside a realtime request and slow it down. Each stage marks
a realtime request as *in flight* for as long as it holds it, and a moment longer when it hands it
on to the next stage (``realtime_in_flight``), and batch work asks ``batch_may_run`` before each step
or chunk and waits while the answer is no. Work of either
priority takes the device a step or chunk at a time (``turn``): realtime waiters before batch ones.

What holds where (docs/scheduling.md):

- In one process, stages on one device share one arbiter (``arbiter_for``): its ``PriorityLock``
  gives the device to one step or chunk at a time, realtime first, and its count of realtime
  requests pauses batch work at the next boundary.
- Across the processes of one Ray node (Ray Serve runs every replica in its own process), the
  marks are also files in a folder per device and node under ``/dev/shm`` (or
  ``WANSERVE_DEVICE_MARKS``), one per realtime request, named after the process that made it; a
  mark whose process has died is removed by the next reader. Batch work in any of them pauses at
  its next boundary.
  The processes do not take turns otherwise: two realtime requests in two processes run together,
  and a step or chunk already running finishes.
- Not across Ray nodes, nor across containers that do not share ``/dev/shm`` (pods sharing a GPU
  through time-slicing or MPS): there each process arbitrates only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from serve.app.priority_lock import REALTIME, PriorityLock

# How often waiting batch work looks again for realtime marks of other processes.
POLL_S = 0.01
# How long a stage keeps a realtime request marked after handing it to the next stage.
HANDOFF_S = 0.25
MARKS_ENV = "WANSERVE_DEVICE_MARKS"


def default_marks_root() -> Path | None:
    """``WANSERVE_DEVICE_MARKS`` ("off": in-process only), else ``/dev/shm``, else the temp folder."""
    import tempfile

    configured = os.environ.get(MARKS_ENV)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class DeviceArbiter:
    """The arbiter of one device in this process, and its marks shared with the host's other processes."""

    def __init__(self, device_key: str, marks_root: Path | None = None, poll_s: float = POLL_S,
                 node: str = "local") -> None:
        # ``cpu`` or a GPU's key (``serve.pipeline.device.device_key``); the marks are per device and node.
        self.device_key = device_key
        self.node = node
        self.poll_s = poll_s
        self.lock = PriorityLock()
        self._realtime_here = 0
        self._marks: Path | None = None
        if marks_root is not None:
            self._marks = marks_root / f"wanserve-device-{_safe(device_key)}-{_safe(node)}"
            self._marks.mkdir(parents=True, exist_ok=True)
        self._names = itertools.count()

    @contextmanager
    def realtime_in_flight(self, handoff_s: float = 0.0) -> Iterator[None]:
        """Mark one realtime request as in flight on this device while the block runs, and for
        ``handoff_s`` after it: a stage that hands the request on to the next stage keeps batch work
        paused until the next stage has marked it too (the hop through the router takes a moment,
        and a batch step started in it would hold the device for a whole step)."""
        self._realtime_here += 1
        mark = None
        try:
            if self._marks is not None:
                mark = self._marks / f"{os.getpid()}-{id(self):x}-{next(self._names)}"
                mark.touch()
            yield
        finally:
            if handoff_s > 0:
                asyncio.get_running_loop().call_later(handoff_s, self._unmark, mark)
            else:
                self._unmark(mark)

    def _unmark(self, mark: Path | None) -> None:
        if mark is not None:
            mark.unlink(missing_ok=True)
        self._realtime_here -= 1

    def batch_may_run(self) -> bool:
        """No realtime request is in flight on this device, in this process or another on this host."""
        if self._realtime_here:
            return False
        if self._marks is None:
            return True
        with os.scandir(self._marks) as entries:
            for entry in entries:
                if self._live_mark(entry.name):
                    return False
                # Its process died without cleaning up: the mark must not pause batch work forever.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        return True

    def _live_mark(self, name: str) -> bool:
        pid_text, _, rest = name.partition("-")
        owner = rest.partition("-")[0]
        if pid_text == str(os.getpid()):
            # Ours are counted in _realtime_here (none now); another arbiter's in this process is live.
            return owner != f"{id(self):x}"
        return _process_alive(pid_text)

    def batch_should_yield(self) -> bool:
        """Asked from a worker thread before each block of a running batch step or pass
        (serve/pipeline/preemption.py): realtime work waits for this process's lock, or is in flight
        anywhere on the device."""
        return self.lock.realtime_waiting or not self.batch_may_run()

    async def batch_clear(self, wake: asyncio.Event | None = None) -> bool:
        """Wait until batch work may run (True), or until ``wake`` is set first (False)."""
        while not self.batch_may_run():
            if wake is None:
                await asyncio.sleep(self.poll_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_s)
            if wake.is_set():
                return False
        return True

    @asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        """Hold the device for one step or chunk; batch work first waits for realtime work to clear,
        and looks again once it holds the lock: realtime work that came while it queued for the lock
        (behind other batch chunks) goes first."""
        while True:
            if priority != REALTIME:
                await self.batch_clear()
            async with self.lock.hold(priority):
                if priority == REALTIME or self.batch_may_run():
                    yield
                    return


@functools.cache
def arbiter_for(device_key: str) -> DeviceArbiter:
    """This process's arbiter of ``device_key`` (``serve.pipeline.device.device_key``): stages on one
    device in one process share it, and processes of one Ray node share its marks."""
    return DeviceArbiter(device_key, default_marks_root(), node=_ray_node())


def _ray_node() -> str:
    """The Ray node this process runs on: the processes of one node share a device's marks, and two
    Ray clusters on one host (a test session beside a benchmark) do not pause each other's work."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())[:16]
    except Exception:  # no Ray here: this process alone
        pass
    return "local"


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in key)


def _process_alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
