"""Every benchmark runs end to end in its tiny ``--quick`` form and ends with its goal line.

These are smoke runs, not timed tests: the figures are not checked, only that each script starts
what it needs, finishes, exits 0 and prints ``<name>: <figure> (goal <op> <value>)`` last. The
scripts run two at a time (each starts its own Ray and deploys its apps), so the set takes about seven
minutes here (401 s in the run of 2026-12-01), a third of `make test`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["stage_split", "hops", "cache_hits", "priority", "batching", "burst", "memory", "quality_ladder",
           "eta_error", "gpu_fullsize"]
TIMEOUT_S = 420

pytestmark = pytest.mark.integration


def _run(name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(SCRIPTS, pool.map(_run, SCRIPTS), strict=True))


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_quick_run_exits_0_and_ends_with_its_goal_line(runs: dict[str, subprocess.CompletedProcess[str]],
                                                         name: str) -> None:
    run = runs[name]
    assert run.returncode == 0, f"{name} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert lines, f"{name} printed nothing; stderr:\n{run.stderr[-3000:]}"
    assert re.match(rf"^{name}: .+ \(goal .+\)$", lines[-1]), f"last line of {name}: {lines[-1]!r}"
