"""Progress writes are coalesced: a fast denoiser does not cost a job-store write per step (issue 14)."""

from __future__ import annotations

from typing import Any

from serve.app.execution import _ProgressReporter


class Recorder:
    """Stands in for `Execution._broadcast`: the progress each write would store."""

    def __init__(self) -> None:
        self.written: list[int] = []

    async def _broadcast(self, _key: str, **fields: Any) -> None:
        self.written.append(fields["progress"])


async def _report(steps: int, min_interval_s: float) -> list[int]:
    recorder = Recorder()
    report = _ProgressReporter(recorder, "key", min_interval_s=min_interval_s)  # type: ignore[arg-type]
    for done in range(1, steps + 1):
        await report(done, steps)
    return recorder.written


async def test_steps_faster_than_the_interval_write_the_first_and_the_last_only() -> None:
    assert await _report(50, min_interval_s=3600) == [2, 99]


async def test_without_an_interval_every_change_of_percentage_is_written_once() -> None:
    written = await _report(400, min_interval_s=0)
    assert written == list(range(100))  # 0..99, each once (100 is kept for "completed")
