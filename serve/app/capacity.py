"""How much work the router admits at once: derived from the stages, not a number kept in step by hand.

The Denoiser is the stage that bounds the service: each replica advances up to ``batch_max_size``
requests per step (serve/app/step_scheduler.py), so the stages hold ``denoiser_replicas x
batch_max_size`` generations at once. Each router replica runs its own priority lanes, so that is
shared among the router replicas that always run (``router_replicas``, the Ingress's min_replicas).
Load, which the operator's degradation tiers follow, is then (in flight + queued) / this capacity,
summed over router replicas. Two figures come from the same rule: the lanes admit up to what the
stages hold at their largest (``lane_capacity``: the autoscaler must see the load to scale out), and
the load the operator's tiers follow is measured against what the stages hold *now*
(``capacity_now``: the Denoiser and Ingress replicas running at this moment, from Serve's status), so
1.0 means the replicas running now are full.

The chart renders the inputs into the Ingress ``user_config`` (``capacity``), so scaling a stage
reconfigures the running router replicas instead of restarting them.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class StageCapacity(BaseModel):
    """The sizing the router's capacity derives from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The stable version's Denoiser replicas at most (its autoscaling max_replicas).
    denoiser_replicas: int = Field(ge=1)
    # Requests one Denoiser replica advances together.
    batch_max_size: int = Field(ge=1)
    # Router (Ingress) replicas that always run, each with its own lanes.
    router_replicas: int = Field(default=1, ge=1)


def lane_capacity(stages: StageCapacity) -> int:
    """Generations one router replica runs at once: the stages' replicas x batch, shared by the routers."""
    return max(1, math.ceil(stages.denoiser_replicas * stages.batch_max_size / stages.router_replicas))


def capacity_now(stages: StageCapacity, running_denoisers: int, running_routers: int) -> int:
    """One router replica's share of what the stages hold at the replicas running now (at least 1)."""
    return lane_capacity(stages.model_copy(update={"denoiser_replicas": max(1, running_denoisers),
                                                   "router_replicas": max(1, running_routers)}))
