"""The router's capacity follows the stages: denoiser replicas x batch, shared by the router replicas."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.app.capacity import StageCapacity, capacity_now, lane_capacity


@pytest.mark.parametrize(
    ("denoisers", "batch", "routers", "capacity"),
    [
        (1, 4, 1, 4),  # one Denoiser replica batching 4
        (4, 4, 1, 16),  # the chart's defaults
        (16, 4, 2, 32),  # values-02: 16 Denoisers, two router replicas share them
        (3, 4, 2, 6),
        (1, 1, 4, 1),  # never below one
        (5, 1, 2, 3),  # rounded up: the stages are never left idle by a rounding
    ],
)
def test_capacity_is_replicas_times_batch_over_routers(denoisers: int, batch: int, routers: int, capacity: int) -> None:
    stages = StageCapacity(denoiser_replicas=denoisers, batch_max_size=batch, router_replicas=routers)
    assert lane_capacity(stages) == capacity


def test_more_denoisers_mean_more_capacity() -> None:
    small = StageCapacity(denoiser_replicas=2, batch_max_size=4)
    large = small.model_copy(update={"denoiser_replicas": 8})
    assert lane_capacity(large) == 4 * lane_capacity(small)


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValidationError):
        StageCapacity(denoiser_replicas=0, batch_max_size=4)


def test_load_is_measured_against_the_replicas_running_now() -> None:
    stages = StageCapacity(denoiser_replicas=16, batch_max_size=4, router_replicas=2)
    assert lane_capacity(stages) == 32  # what the lanes admit: the stages at their largest
    assert capacity_now(stages, running_denoisers=2, running_routers=2) == 4  # two Denoisers running now
    assert capacity_now(stages, running_denoisers=16, running_routers=4) == 16  # four routers share them
    assert capacity_now(stages, running_denoisers=0, running_routers=0) == 4  # counted as one: load stays finite
