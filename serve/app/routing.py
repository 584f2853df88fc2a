"""Pure routing decisions at the ingress: which version, which instance, what the tier serves."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from serve.jobs import ServedParams
from serve.params import GenerationParams
from serve.policy import DegradationTier, Instance, ServingPolicy, snap_frames, snap_size, snap_steps


class UnknownModel(ValueError):
    """The request named a model version this app does not serve."""


def choose_version(
    policy: ServingPolicy, loaded: list[str], requested: str | None, rng: random.Random
) -> str:
    """The requested version if served here, else a weighted draw over the policy's weights."""
    if requested is not None:
        if requested not in loaded:
            raise UnknownModel(f"model {requested!r} is not served here; available: {', '.join(loaded)}")
        return requested
    weighted = [(version, policy.weights.get(version, 0.0)) for version in loaded]
    total = sum(weight for _, weight in weighted)
    if total <= 0:
        return loaded[0]
    point = rng.uniform(0, total)
    for version, weight in weighted:
        point -= weight
        if point <= 0 and weight > 0:
            return version
    return next(version for version, weight in reversed(weighted) if weight > 0)


def apply_tier(params: GenerationParams, tier: DegradationTier) -> tuple[GenerationParams, ServedParams | None]:
    """Fit the request into the tier's limits, on the model's size and frame grids."""
    width, height = snap_size(params.width, params.height, tier.max_area)
    frames = snap_frames(params.num_frames, tier.max_frames)
    steps = snap_steps(params.num_inference_steps, tier.max_steps)
    if (width, height, frames, steps) == (params.width, params.height, params.num_frames, params.num_inference_steps):
        return params, None
    served = params.model_copy(
        update={"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps}
    )
    return served, ServedParams(tier=tier.name, size=served.size, num_frames=frames, num_inference_steps=steps)


@dataclass
class InstanceHealth:
    """Consecutive failures per (version, instance); a success resets the count."""

    failures: dict[tuple[str, Instance], int] = field(default_factory=dict)

    def record(self, version: str, instance: Instance, ok: bool) -> int:
        key = (version, instance)
        self.failures[key] = 0 if ok else self.failures.get(key, 0) + 1
        return self.failures[key]


def injected_fault(policy: ServingPolicy, version: str, instance: Instance, rng: random.Random) -> bool:
    """Drill-only: whether this call should fail on purpose."""
    return any(
        fault.model_version == version and fault.instance == instance and rng.random() < fault.error_rate
        for fault in policy.faults
    )
