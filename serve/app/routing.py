"""Pure routing decisions at the ingress: which version, which instance, what the tier serves."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from serve.jobs import ServedParams
from serve.params import GenerationParams
from serve.policy import (
    DegradationTier,
    Instance,
    Lane,
    ServingPolicy,
    TierRoute,
    snap_frames,
    snap_size,
    snap_steps,
)


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


def tier_route(tier: DegradationTier, lane: Lane, requested: str | None, loaded: list[str]) -> TierRoute | None:
    """The tier's route, when it moves this request: the tier covers its lane, the client named no
    version (a pinned version is served as pinned), and the route's version is served here."""
    route = tier.route
    if route is None or not tier.applies_to(lane) or requested is not None or route.model_version not in loaded:
        return None
    return route


def apply_tier(
    params: GenerationParams, tier: DegradationTier, lane: Lane, model_version: str, route: TierRoute | None = None
) -> tuple[GenerationParams, ServedParams | None]:
    """Fit the request into the tier's limits (on the model's size and frame grids), with the tier's step
    caching, and the steps and guidance of the version it was routed to (``route``, from ``tier_route``).

    A tier that does not cover ``lane`` leaves the request as asked. ``served`` is None when nothing changed.
    """
    if not tier.applies_to(lane):
        return params, None
    width, height = snap_size(params.width, params.height, tier.max_area)
    frames = snap_frames(params.num_frames, tier.max_frames)
    steps = snap_steps(params.num_inference_steps, tier.max_steps)
    guidance = params.guidance_scale
    if route is not None:
        steps = snap_steps(steps, route.num_inference_steps)
        guidance = guidance if route.guidance_scale is None else route.guidance_scale
    update = {"width": width, "height": height, "num_frames": frames, "num_inference_steps": steps,
              "guidance_scale": guidance, "step_cache": tier.step_cache}
    served = params.model_copy(update=update)
    if served == params and route is None:
        return params, None
    return served, ServedParams(
        tier=tier.name, size=served.size, num_frames=frames, num_inference_steps=steps, model_version=model_version,
        guidance_scale=guidance, step_cache=None if tier.step_cache is None else tier.step_cache.label,
    )


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
